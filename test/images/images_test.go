package images_test

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gpupack/gpupack/test/images"
)

const distrolessPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// TestRepositoryDockerfiles reads deploy/docker's Dockerfiles and checks
// the images they describe, then writes and reads them back.
func TestRepositoryDockerfiles(t *testing.T) {
	_, self, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(self), "..", "..", "deploy", "docker")
	tmp := t.TempDir()
	fake := func(name string) string { return writeFile(t, tmp, name, "fake "+name, 0o755) }
	tests := []struct {
		file  string
		built map[string]string
		want  images.Image
	}{{
		file:  "extender.Dockerfile",
		built: map[string]string{"/out/gpupack-extender": fake("gpupack-extender")},
		want: images.Image{
			Base:       images.BaseStatic,
			Files:      []images.File{{Path: "/usr/local/bin/gpupack-extender", Source: filepath.Join(tmp, "gpupack-extender")}},
			Entrypoint: []string{"/usr/local/bin/gpupack-extender"},
			User:       "65532:65532",
			WorkingDir: "/home/nonroot", // from the nonroot tag
		},
	}, {
		file:  "device-plugin.Dockerfile",
		built: map[string]string{"/out/gpupack-device-plugin": fake("gpupack-device-plugin")},
		want: images.Image{
			Base:       images.BaseGlibc,
			Files:      []images.File{{Path: "/usr/local/bin/gpupack-device-plugin", Source: filepath.Join(tmp, "gpupack-device-plugin")}},
			Entrypoint: []string{"/usr/local/bin/gpupack-device-plugin"},
			Env:        []string{"NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=utility"},
		},
	}, {
		file:  "train.Dockerfile",
		built: map[string]string{"/out/gpupack-train": fake("gpupack-train")},
		want: images.Image{
			Base:       images.BaseGlibc,
			Files:      []images.File{{Path: "/usr/local/bin/gpupack-train", Source: filepath.Join(tmp, "gpupack-train")}},
			Entrypoint: []string{"/usr/local/bin/gpupack-train"},
		},
	}}
	var all []images.Image
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			ref := "ghcr.io/gpupack/" + strings.TrimSuffix(tt.file, ".Dockerfile") + ":dev"
			got, err := images.FromDockerfile(filepath.Join(dir, tt.file), ref, tt.built)
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Ref = ref
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("FromDockerfile:\n got %#v\nwant %#v", got, tt.want)
			}
			all = append(all, got)
		})
	}
	if len(all) != len(tests) {
		return
	}
	out := filepath.Join(tmp, "images.tar")
	if err := images.Write(out, all...); err != nil {
		t.Fatal(err)
	}
	for _, want := range all {
		cfg := config(t, readImage(t, out, want.Ref))
		if !reflect.DeepEqual(cfg.Config.Entrypoint, want.Entrypoint) || cfg.Config.User != want.User {
			t.Errorf("%s: entrypoint %q user %q, want %q %q", want.Ref, cfg.Config.Entrypoint, cfg.Config.User, want.Entrypoint, want.User)
		}
	}
}

// TestFromDockerfile checks the instructions of a final stage and the
// substitution of ARGs and ENVs.
func TestFromDockerfile(t *testing.T) {
	dir := t.TempDir()
	bin := writeFile(t, dir, "x", "x", 0o755)
	dockerfile := writeFile(t, dir, "Dockerfile", `# syntax=docker/dockerfile:1
ARG KIND=base
ARG NAME=gpupack
FROM golang:1.26 AS build
RUN go build -o /out/x .

FROM gcr.io/distroless/${KIND}-debian12:latest
ARG NAME
ARG DIR=/opt/${NAME}
ENV APP=$DIR PATH=/opt/bin:$PATH
ENV LEVEL=2
WORKDIR $DIR
WORKDIR sub
COPY --from=build --chmod=0700 /out/x bin/
COPY --from=0 /out/x /usr/bin/y
COPY --from=build --chmod=0755 /out/x /usr/bin/y
LABEL org.opencontainers.image.title=$NAME
CMD ["--v=${LEVEL}"]
USER nonroot
`, 0o644)
	got, err := images.FromDockerfile(dockerfile, "example.com/x:1", map[string]string{"/out/x": bin})
	if err != nil {
		t.Fatal(err)
	}
	want := images.Image{
		Ref:  "example.com/x:1",
		Base: images.BaseGlibc,
		Files: []images.File{
			{Path: "/opt/gpupack/sub/bin/x", Source: bin, Mode: 0o700},
			{Path: "/usr/bin/y", Source: bin, Mode: 0o755}, // the later COPY
		},
		Cmd:        []string{"--v=${LEVEL}"}, // exec form: no substitution
		User:       "nonroot",
		Env:        []string{"APP=/opt/gpupack", "PATH=/opt/bin:" + strings.TrimPrefix(distrolessPath, "PATH="), "LEVEL=2"},
		WorkingDir: "/opt/gpupack/sub",
		Labels:     map[string]string{"org.opencontainers.image.title": "gpupack"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FromDockerfile:\n got %#v\nwant %#v", got, want)
	}
}

func TestFromDockerfileErrors(t *testing.T) {
	const build = "FROM golang:1.26 AS build\nRUN go build -o /out/x .\n"
	tests := []struct {
		name, dockerfile string
		want             []string // in the error
	}{
		{"run", build + "FROM gcr.io/distroless/static-debian12\nRUN echo\n", []string{":4:", "RUN", "not supported"}},
		{"unknown base", build + "FROM alpine:3.20\nCOPY --from=build /out/x /x\n", []string{":3:", "alpine:3.20", "gcr.io/distroless/static*"}},
		{"not built", build + "FROM gcr.io/distroless/static-debian12\nCOPY --from=build /out/y /y\n", []string{":4:", "COPY", "/out/y", "/out/x"}},
		{"shell entrypoint", build + "FROM gcr.io/distroless/static-debian12\nENTRYPOINT /x --v=2\n", []string{":4:", "ENTRYPOINT", "shell form"}},
		{"shell cmd", build + "FROM gcr.io/distroless/static-debian12\nCMD /x --v=2\n", []string{":4:", "CMD", "shell form"}},
		{"build context", build + "FROM gcr.io/distroless/static-debian12\nCOPY x /x\n", []string{":4:", "COPY", "build context"}},
		{"image source", build + "FROM gcr.io/distroless/static-debian12\nCOPY --from=busybox /bin/sh /sh\n", []string{":4:", "--from=busybox", "not an earlier stage"}},
		{"chown", build + "FROM gcr.io/distroless/static-debian12\nCOPY --from=build --chown=1:1 /out/x /x\n", []string{":4:", "--chown"}},
		{"bad chmod", build + "FROM gcr.io/distroless/static-debian12\nCOPY --from=build --chmod=u+x /out/x /x\n", []string{":4:", "--chmod=u+x"}},
		{"add", build + "FROM gcr.io/distroless/static-debian12\nADD https://example.com/x /x\n", []string{":4:", "ADD"}},
		{"syntax", "FROM gcr.io/distroless/static-debian12\nCOPY --from=build\n", []string{"COPY"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := writeFile(t, dir, "Dockerfile", tt.dockerfile, 0o644)
			_, err := images.FromDockerfile(f, "example.com/x:1", map[string]string{"/out/x": f})
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, err := images.FromDockerfile(filepath.Join(t.TempDir(), "Dockerfile"), "example.com/x:1", nil)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("error %v, want fs.ErrNotExist", err)
		}
	})
}

// TestWrite writes images, reads them back with go-containerregistry and
// checks their configuration and files.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	bin := writeFile(t, dir, "bin", "binary", 0o755)
	conf := writeFile(t, dir, "conf", "conf", 0o644)
	cgo := goBuild(t, dir, "cgo", cgoProgram, "1")
	static := images.Image{
		Ref:        "example.com/static:1",
		Base:       images.BaseStatic,
		Files:      []images.File{{Path: "/usr/local/bin/app", Source: bin}, {Path: "/etc/app/conf", Source: conf, Mode: 0o600}},
		Entrypoint: []string{"/usr/local/bin/app"},
		Cmd:        []string{"--v=2"},
		User:       "65532:65532",
		Env:        []string{"A=1", "PATH=/app"},
		WorkingDir: "/work/dir",
		Labels:     map[string]string{"a": "b"},
	}
	other := images.Image{Ref: "example.com/other:1", Base: images.BaseStatic, Files: []images.File{{Path: "/x", Source: conf}}}
	glibc := images.Image{Ref: "example.com/glibc:1", Base: images.BaseGlibc, Files: []images.File{{Path: "/app", Source: cgo}}, Entrypoint: []string{"/app"}}
	out := filepath.Join(dir, "images.tar")
	if err := images.Write(out, static, other, glibc); err != nil {
		t.Fatal(err)
	}

	t.Run("config", func(t *testing.T) {
		cfg := config(t, readImage(t, out, static.Ref))
		want := v1.Config{
			Entrypoint: static.Entrypoint,
			Cmd:        static.Cmd,
			User:       static.User,
			Env:        []string{"PATH=/app", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "A=1"},
			WorkingDir: static.WorkingDir,
			Labels:     static.Labels,
		}
		if !reflect.DeepEqual(cfg.Config, want) {
			t.Errorf("config\n got %#v\nwant %#v", cfg.Config, want)
		}
		if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH || !cfg.Created.Equal(time.Unix(0, 0)) || cfg.RootFS.Type != "layers" {
			t.Errorf("os %s, architecture %s, created %v, rootfs %q; want linux, %s, the epoch, layers", cfg.OS, cfg.Architecture, cfg.Created, cfg.RootFS.Type, runtime.GOARCH)
		}
		if env := config(t, readImage(t, out, other.Ref)).Config.Env; env[0] != distrolessPath {
			t.Errorf("env %q: want distroless's PATH first", env)
		}
	})

	t.Run("files", func(t *testing.T) {
		files := flatten(t, readImage(t, out, static.Ref))
		for _, f := range []struct {
			path  string
			typ   byte
			mode  int64
			owner int
			data  string // "": not checked
		}{
			{"/usr/local/bin/app", tar.TypeReg, 0o755, 0, "binary"},
			{"/usr/local/bin", tar.TypeDir, 0o755, 0, ""},
			{"/etc/app/conf", tar.TypeReg, 0o600, 0, "conf"},
			{"/work/dir", tar.TypeDir, 0o755, 0, ""},
			{"/etc/passwd", tar.TypeReg, 0o644, 0, "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
			{"/etc/group", tar.TypeReg, 0o644, 0, "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"},
			{"/etc/nsswitch.conf", tar.TypeReg, 0o644, 0, "hosts: files dns\n"},
			{"/tmp", tar.TypeDir, 0o1777, 0, ""},
			{"/home/nonroot", tar.TypeDir, 0o700, 65532, ""},
		} {
			e, ok := files[f.path]
			switch {
			case !ok:
				t.Errorf("%s: missing", f.path)
			case e.hdr.Typeflag != f.typ || e.hdr.Mode != f.mode || e.hdr.Uid != f.owner || e.hdr.Gid != f.owner:
				t.Errorf("%s: type %c mode %o owner %d:%d, want %c %o %d:%d", f.path, e.hdr.Typeflag, e.hdr.Mode, e.hdr.Uid, e.hdr.Gid, f.typ, f.mode, f.owner, f.owner)
			case f.data != "" && string(e.data) != f.data:
				t.Errorf("%s: content %q, want %q", f.path, e.data, f.data)
			}
		}
		if host, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil && !bytes.Equal(files["/etc/ssl/certs/ca-certificates.crt"].data, host) {
			t.Error("the host's CA bundle is not in the image")
		}
		for p, e := range files {
			if !e.hdr.ModTime.Equal(time.Unix(0, 0)) || p != "/home/nonroot" && e.hdr.Uid != 0 {
				t.Errorf("%s: time %v owner %d, want the epoch and root", p, e.hdr.ModTime, e.hdr.Uid)
			}
		}
	})

	t.Run("glibc", func(t *testing.T) {
		files := flatten(t, readImage(t, out, glibc.Ref))
		f, err := elf.Open(cgo)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		interp := interpreter(t, f)
		needed, err := f.DynString(elf.DT_NEEDED)
		if err != nil || !slices.Contains(needed, "libc.so.6") {
			t.Fatalf("the cgo program needs %q (%v), want libc.so.6", needed, err)
		}
		if p, ok := resolve(files, interp); !ok || files[p].hdr.Typeflag != tar.TypeReg {
			t.Errorf("interpreter %s: not in the image", interp)
		}
		var libc bool
		for p := range files {
			if q, ok := resolve(files, p); ok && path.Base(p) == "libc.so.6" && files[q].hdr.Typeflag == tar.TypeReg {
				libc = true
			}
		}
		if !libc {
			t.Error("libc.so.6: not in the image")
		}
	})

	t.Run("shared base layer", func(t *testing.T) {
		first := func(ref string) v1.Hash {
			layers, err := readImage(t, out, ref).Layers()
			if err != nil || len(layers) != 2 {
				t.Fatalf("%s: %d layers (%v), want 2", ref, len(layers), err)
			}
			d, err := layers[0].Digest()
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		if first(static.Ref) != first(other.Ref) {
			t.Error("two static images have different base layers")
		}
		if first(static.Ref) == first(glibc.Ref) {
			t.Error("the glibc base layer is the static one")
		}
	})

	t.Run("static binary needs nothing", func(t *testing.T) {
		gobin := goBuild(t, dir, "static", "package main\nfunc main() {}\n", "0")
		tarPath := filepath.Join(t.TempDir(), "images.tar")
		if err := images.Write(tarPath, images.Image{Ref: "example.com/s:1", Base: images.BaseGlibc, Files: []images.File{{Path: "/s", Source: gobin}}}); err != nil {
			t.Fatal(err)
		}
		for p := range flatten(t, readImage(t, tarPath, "example.com/s:1")) {
			if strings.Contains(p, ".so") {
				t.Errorf("%s in the image of a static binary", p)
			}
		}
	})
}

// TestWriteReproducible writes the same images twice.
func TestWriteReproducible(t *testing.T) {
	dir := t.TempDir()
	bin := writeFile(t, dir, "bin", "binary", 0o755)
	img := images.Image{Ref: "example.com/r:1", Base: images.BaseStatic, Files: []images.File{{Path: "/bin/r", Source: bin}}, Entrypoint: []string{"/bin/r"}}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	var digests []v1.Hash
	for range 2 {
		out := filepath.Join(t.TempDir(), "images.tar")
		if err := images.Write(out, img); err != nil {
			t.Fatal(err)
		}
		v := readImage(t, out, img.Ref)
		d, err := v.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
		if created := config(t, v).Created; !created.Equal(time.Unix(1700000000, 0)) {
			t.Errorf("created %v, want SOURCE_DATE_EPOCH", created)
		}
	}
	if digests[0] != digests[1] {
		t.Errorf("digests %s and %s, want the same", digests[0], digests[1])
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	bin := writeFile(t, dir, "bin", "binary", 0o755)
	ok := images.Image{Ref: "example.com/x:1", Files: []images.File{{Path: "/x", Source: bin}}}
	with := func(f func(*images.Image)) []images.Image {
		img := ok
		img.Files = slices.Clone(ok.Files)
		f(&img)
		return []images.Image{img}
	}
	// A program needing a library the loader cannot find on this host.
	lib := filepath.Join(dir, "lib")
	if err := os.Mkdir(lib, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, lib, "missing.c", "int gpupack_missing(void) { return 1; }\n", 0o644)
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", filepath.Join(lib, "libgpupackmissing.so"), filepath.Join(lib, "missing.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	needsMissing := goBuild(t, dir, "needs-missing", `package main

// #cgo LDFLAGS: -L`+lib+` -lgpupackmissing
// int gpupack_missing(void);
import "C"

func main() { C.gpupack_missing() }
`, "1")

	tests := []struct {
		name string
		imgs []images.Image
		env  string // SOURCE_DATE_EPOCH
		want []string
	}{
		{"none", nil, "", []string{"no image"}},
		{"unknown base", with(func(i *images.Image) { i.Base = 7 }), "", []string{"example.com/x:1", "Base(7)", "BaseStatic"}},
		{"bad ref", with(func(i *images.Image) { i.Ref = "Example.com/X::1" }), "", []string{"Example.com/X::1"}},
		{"digest ref", with(func(i *images.Image) { i.Ref = "example.com/x@sha256:" + strings.Repeat("0", 64) }), "", []string{"tagged"}},
		{"relative path", with(func(i *images.Image) { i.Files[0].Path = "x" }), "", []string{`"x"`, "absolute"}},
		{"missing source", with(func(i *images.Image) { i.Files = []images.File{{Path: "/x", Source: filepath.Join(dir, "nope")}} }), "", []string{"nope"}},
		{"directory source", with(func(i *images.Image) { i.Files = []images.File{{Path: "/x", Source: dir}} }), "", []string{"not a regular file"}},
		{"file under a file", with(func(i *images.Image) {
			i.Files = []images.File{{Path: "/x", Source: bin}, {Path: "/x/y", Source: bin}}
		}), "", []string{"/x is a file"}},
		{"two images one ref", append(with(func(*images.Image) {}), ok), "", []string{"two images"}},
		{"missing library", with(func(i *images.Image) {
			i.Base = images.BaseGlibc
			i.Files = []images.File{{Path: "/app", Source: needsMissing}}
		}), "", []string{"libgpupackmissing.so", needsMissing}},
		{"bad SOURCE_DATE_EPOCH", with(func(*images.Image) {}), "yesterday", []string{"SOURCE_DATE_EPOCH"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("SOURCE_DATE_EPOCH", tt.env)
			err := images.Write(filepath.Join(t.TempDir(), "images.tar"), tt.imgs...)
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

const cgoProgram = `package main

// #include <stdio.h>
// static void hello(void) { puts("hello"); }
import "C"

func main() { C.hello() }
`

// goBuild builds the Go program src with CGO_ENABLED=cgo.
func goBuild(t *testing.T, dir, name, src, cgo string) string {
	t.Helper()
	srcDir := filepath.Join(dir, name+"-src")
	if err := os.Mkdir(srcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, srcDir, "main.go", src, 0o644)
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "main.go")
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", "CGO_ENABLED="+cgo)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, b)
	}
	return out
}

func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func readImage(t *testing.T, tarPath, ref string) v1.Image {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	return img
}

func config(t *testing.T, img v1.Image) *v1.ConfigFile {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type file struct {
	hdr  *tar.Header
	data []byte
}

// flatten is the image's file system, by absolute path.
func flatten(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]file{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[path.Clean("/"+h.Name)] = file{hdr: h, data: data}
	}
}

// resolve follows the symlinks of p in files.
func resolve(files map[string]file, p string) (string, bool) {
	for range 40 {
		names := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
		at, link := "/", false
		for i, n := range names {
			next := path.Join(at, n)
			f, ok := files[next]
			if !ok {
				return "", false
			}
			if f.hdr.Typeflag == tar.TypeSymlink {
				target := f.hdr.Linkname
				if !path.IsAbs(target) {
					target = path.Join(at, target)
				}
				p, link = path.Join(append([]string{target}, names[i+1:]...)...), true
				break
			}
			at = next
		}
		if !link {
			return at, true
		}
	}
	return "", false
}

func interpreter(t *testing.T, f *elf.File) string {
	t.Helper()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimRight(string(b), "\x00")
		}
	}
	t.Fatal("the cgo program has no interpreter")
	return ""
}
