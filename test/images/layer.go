package images

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// caBundle is where distroless and Debian keep the CA certificates.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

const nonroot = 65532

// The users and groups of the distroless images.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
)

// entry is a regular file, directory or symlink of a layer.
type entry struct {
	typ    byte  // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	mode   int64 // as tar has it: permissions, and 01000 sticky
	owner  int   // uid and gid
	source string
	data   []byte // content of a regular file without source
	link   string
}

func dir(mode int64) entry { return entry{typ: tar.TypeDir, mode: mode} }

// tree is the content of a layer by absolute path, over the layer lower
// (nil for the first) whose directories it does not repeat.
type tree struct {
	entries map[string]entry
	lower   *tree
}

func newTree(lower *tree) *tree { return &tree{entries: map[string]entry{}, lower: lower} }

func (t *tree) get(p string) (entry, bool) {
	if e, ok := t.entries[p]; ok {
		return e, true
	}
	if t.lower == nil {
		return entry{}, false
	}
	return t.lower.get(p)
}

// put sets p (absolute, clean) to e, adding its missing parents (0755).
func (t *tree) put(p string, e entry) error {
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		if parent, ok := t.get(d); ok {
			if parent.typ == tar.TypeReg {
				return fmt.Errorf("%s: %s is a file, not a directory", p, d)
			}
			break
		}
		t.entries[d] = dir(0o755)
	}
	t.entries[p] = e
	return nil
}

// layer is the tree as an image layer.
func (t *tree) layer(epoch time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range slices.Sorted(maps.Keys(t.entries)) {
		if err := t.entries[p].write(tw, p, epoch); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithCompressedCaching)
}

func (e entry) write(tw *tar.Writer, p string, epoch time.Time) error {
	h := &tar.Header{
		Typeflag: e.typ,
		Name:     p[1:],
		Linkname: e.link,
		Mode:     e.mode,
		Uid:      e.owner,
		Gid:      e.owner,
		ModTime:  epoch,
	}
	if e.typ == tar.TypeDir {
		h.Name += "/"
	}
	data := e.data
	if e.source != "" {
		var err error
		if data, err = os.ReadFile(e.source); err != nil {
			return err
		}
	}
	h.Size = int64(len(data))
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	_, err := tw.Write(data)
	return err
}

// layer is a base layer: its tree, which the layer above builds on, and the
// layer itself.
type layer struct {
	tree *tree
	v1   v1.Layer
}

// baseLayers makes the first layer of each Base the images use.
func baseLayers(imgs []Image, epoch time.Time) (map[Base]*layer, error) {
	sources := map[Base][]string{}
	for _, img := range imgs {
		if img.Base != BaseStatic && img.Base != BaseGlibc {
			return nil, fmt.Errorf("images: %s: unknown %v; want BaseStatic or BaseGlibc", img.Ref, img.Base)
		}
		files := sources[img.Base]
		for _, f := range img.Files {
			files = append(files, f.Source)
		}
		sources[img.Base] = files
	}
	out := map[Base]*layer{}
	for b, files := range sources {
		t, err := baseTree(b, files)
		if err != nil {
			return nil, fmt.Errorf("images: %v base: %w", b, err)
		}
		l, err := t.layer(epoch)
		if err != nil {
			return nil, fmt.Errorf("images: %v base: %w", b, err)
		}
		out[b] = &layer{tree: t, v1: l}
	}
	return out, nil
}

// baseTree is the stand-in for a distroless base; for BaseGlibc, with the
// loader and libraries that the ELF files among files need.
func baseTree(b Base, files []string) (*tree, error) {
	t := newTree(nil)
	for p, e := range map[string]entry{
		"/etc/passwd":        {typ: tar.TypeReg, mode: 0o644, data: []byte(passwd)},
		"/etc/group":         {typ: tar.TypeReg, mode: 0o644, data: []byte(group)},
		"/etc/nsswitch.conf": {typ: tar.TypeReg, mode: 0o644, data: []byte("hosts: files dns\n")},
		"/tmp":               dir(0o1777),
		"/root":              dir(0o700),
		"/home/nonroot":      {typ: tar.TypeDir, mode: 0o700, owner: nonroot},
	} {
		if err := t.put(p, e); err != nil {
			return nil, err
		}
	}
	switch _, err := os.Stat(caBundle); {
	case err == nil:
		if err := t.put(caBundle, entry{typ: tar.TypeReg, mode: 0o644, source: caBundle}); err != nil {
			return nil, err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	if b == BaseGlibc {
		for _, f := range files {
			if err := t.libs(f); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// fileLayer is the tree of the image's files (and working directory) over
// its base.
func fileLayer(img Image, base *tree) (*tree, error) {
	t := newTree(base)
	for _, f := range img.Files {
		p := path.Clean(f.Path)
		if !path.IsAbs(f.Path) || p == "/" {
			return nil, fmt.Errorf("file %q: want an absolute path of a file in the image", f.Path)
		}
		if _, dup := t.entries[p]; dup {
			return nil, fmt.Errorf("two files at %s", p)
		}
		fi, err := os.Stat(f.Source)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", p, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("file %s: source %s is not a regular file", p, f.Source)
		}
		mode := f.Mode
		if mode == 0 {
			mode = fi.Mode()
		}
		if err := t.put(p, entry{typ: tar.TypeReg, mode: tarMode(mode), source: f.Source}); err != nil {
			return nil, err
		}
	}
	if img.WorkingDir == "" {
		return t, nil
	}
	wd := path.Clean(img.WorkingDir)
	if !path.IsAbs(wd) {
		return nil, fmt.Errorf("working directory %q: want an absolute path", img.WorkingDir)
	}
	if _, ok := t.get(wd); !ok && wd != "/" {
		if err := t.put(wd, dir(0o755)); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// tarMode is m as a tar header has it.
func tarMode(m os.FileMode) int64 {
	mode := int64(m.Perm())
	for bit, v := range map[os.FileMode]int64{os.ModeSetuid: 0o4000, os.ModeSetgid: 0o2000, os.ModeSticky: 0o1000} {
		if m&bit != 0 {
			mode |= v
		}
	}
	return mode
}
