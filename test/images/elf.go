package images

import (
	"archive/tar"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// elfFile is what the dynamic loader reads of an ELF file.
type elfFile struct {
	path    string
	class   elf.Class
	machine elf.Machine
	interp  string // PT_INTERP; none in a static binary
	needed  []string
}

// readELF reads the ELF file p; ok is false when p is not ELF.
func readELF(p string) (f elfFile, ok bool, err error) {
	r, err := os.Open(p)
	if err != nil {
		return f, false, err
	}
	defer r.Close()
	magic := make([]byte, len(elf.ELFMAG))
	if n, err := r.ReadAt(magic, 0); n < len(magic) || string(magic) != elf.ELFMAG {
		if err == io.EOF {
			err = nil
		}
		return f, false, err
	}
	e, err := elf.NewFile(r)
	if err != nil {
		return f, false, fmt.Errorf("%s: %w", p, err)
	}
	f = elfFile{path: p, class: e.Class, machine: e.Machine}
	for _, prog := range e.Progs {
		if prog.Type == elf.PT_INTERP {
			b, err := io.ReadAll(prog.Open())
			if err != nil {
				return f, false, fmt.Errorf("%s: interpreter: %w", p, err)
			}
			f.interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if f.needed, err = e.DynString(elf.DT_NEEDED); err != nil {
		return f, false, fmt.Errorf("%s: needed libraries: %w", p, err)
	}
	return f, true, nil
}

// multiarch is Debian's library directory name of each machine.
var multiarch = map[elf.Machine]string{
	elf.EM_X86_64:  "x86_64-linux-gnu",
	elf.EM_AARCH64: "aarch64-linux-gnu",
	elf.EM_386:     "i386-linux-gnu",
	elf.EM_ARM:     "arm-linux-gnueabihf",
	elf.EM_PPC64:   "powerpc64le-linux-gnu",
	elf.EM_S390:    "s390x-linux-gnu",
	elf.EM_RISCV:   "riscv64-linux-gnu",
}

// libDirs are the directories the loader searches for a library of machine m.
func libDirs(m elf.Machine) []string {
	dirs := []string{"/lib64", "/usr/lib64", "/lib", "/usr/lib"}
	if d, ok := multiarch[m]; ok {
		dirs = append([]string{"/lib/" + d, "/usr/lib/" + d}, dirs...)
	}
	return dirs
}

// findLib is where the loader finds the library lib that by needs: the first
// of libDirs holding an ELF file of by's class and machine.
func findLib(lib string, by elfFile) (string, error) {
	if strings.Contains(lib, "/") {
		return lib, nil
	}
	for _, d := range libDirs(by.machine) {
		f, ok, err := readELF(path.Join(d, lib))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return "", err
		case ok && f.class == by.class && f.machine == by.machine:
			return f.path, nil
		}
	}
	return "", fmt.Errorf("not found in %s: %w", strings.Join(libDirs(by.machine), " "), fs.ErrNotExist)
}

// libs adds the program interpreter of the ELF file bin and the libraries it
// needs, transitively, from this host at the paths where the loader finds
// them. A file that is not ELF, or a static binary, needs nothing.
func (t *tree) libs(bin string) error {
	f, ok, err := readELF(bin)
	if err != nil {
		return err
	}
	if !ok || f.interp == "" {
		return nil
	}
	if _, err := t.host(f.interp, 0); err != nil {
		return fmt.Errorf("%s: interpreter: %w", bin, err)
	}
	seen := map[string]bool{}
	for queue := []elfFile{f}; len(queue) > 0; queue = queue[1:] {
		by := queue[0]
		for _, lib := range by.needed {
			p, err := findLib(lib, by)
			if err != nil {
				if by.path != bin {
					lib += " (through " + by.path + ")"
				}
				return fmt.Errorf("%s needs %s: %w", bin, lib, err)
			}
			at, err := t.host(p, 0)
			if err != nil {
				return fmt.Errorf("%s needs %s: %w", bin, p, err)
			}
			if seen[at] {
				continue
			}
			seen[at] = true
			dep, _, err := readELF(at)
			if err != nil {
				return fmt.Errorf("%s needs %s: %w", bin, at, err)
			}
			queue = append(queue, dep)
		}
	}
	return nil
}

// host adds the host's file p at the same path, each symlink on the way (a
// directory or the file itself) as a symlink, with its target; it returns
// the path of the file itself.
func (t *tree) host(p string, hops int) (string, error) {
	if hops > 40 {
		return "", fmt.Errorf("%s: too many levels of symbolic links", p)
	}
	at := "/"
	names := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	for i, name := range names {
		cur := path.Join(at, name)
		fi, err := os.Lstat(cur)
		if err != nil {
			return "", err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(cur)
			if err != nil {
				return "", err
			}
			if err := t.put(cur, entry{typ: tar.TypeSymlink, mode: 0o777, link: target}); err != nil {
				return "", err
			}
			if !path.IsAbs(target) {
				target = path.Join(at, target)
			}
			if at, err = t.host(target, hops+1); err != nil {
				return "", err
			}
		case fi.IsDir():
			at = cur
		case fi.Mode().IsRegular() && i == len(names)-1:
			if err := t.put(cur, entry{typ: tar.TypeReg, mode: tarMode(fi.Mode()), source: cur}); err != nil {
				return "", err
			}
			at = cur
		default:
			return "", fmt.Errorf("%s: not a regular file, directory or symlink", cur)
		}
	}
	return at, nil
}
