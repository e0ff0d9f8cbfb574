package images

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Base is what an image starts from, in place of the distroless base its
// Dockerfile names.
type Base int

const (
	// BaseStatic stands in for gcr.io/distroless/static-debian12 (any tag):
	// users root, nobody and nonroot, /tmp, /home/nonroot, nsswitch.conf and
	// the host's CA bundle.
	BaseStatic Base = iota
	// BaseGlibc stands in for gcr.io/distroless/base-debian12: BaseStatic
	// plus the loader and libraries the images' binaries need, copied from
	// this (Debian 12) host.
	BaseGlibc
)

func (b Base) String() string {
	switch b {
	case BaseStatic:
		return "static"
	case BaseGlibc:
		return "glibc"
	}
	return "Base(" + strconv.Itoa(int(b)) + ")"
}

// File is a file to put in the image.
type File struct {
	Path   string      // absolute path in the image
	Source string      // file on this machine
	Mode   os.FileMode // 0: the source's mode
}

// Image is an image to build.
type Image struct {
	Ref        string // e.g. "ghcr.io/gpupack/gpupack-extender:dev"
	Base       Base
	Files      []File
	Entrypoint []string
	Cmd        []string
	User       string
	Env        []string // KEY=VALUE, after the base's PATH and SSL_CERT_FILE
	WorkingDir string
	Labels     map[string]string
}

// baseEnv is the environment of the distroless images.
var baseEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"SSL_CERT_FILE=" + caBundle,
}

// Write writes the images as one tarball in `docker save` format (what `ctr
// images import` reads), each under its Ref. Images of the same Base share
// their first layer: for BaseGlibc it holds the libraries of all the
// BaseGlibc images written together.
func Write(path string, imgs ...Image) error {
	if len(imgs) == 0 {
		return errors.New("images: no image to write")
	}
	epoch, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	bases, err := baseLayers(imgs, epoch)
	if err != nil {
		return err
	}
	out := make(map[name.Reference]v1.Image, len(imgs))
	for _, img := range imgs {
		tag, err := name.NewTag(img.Ref)
		if err != nil {
			return fmt.Errorf("images: ref %q: want a tagged name such as ghcr.io/gpupack/gpupack-extender:dev: %w", img.Ref, err)
		}
		if _, dup := out[tag]; dup {
			return fmt.Errorf("images: two images named %s", img.Ref)
		}
		if out[tag], err = build(img, bases[img.Base], epoch); err != nil {
			return fmt.Errorf("images: %s: %w", img.Ref, err)
		}
	}
	if err := tarball.MultiRefWriteToFile(path, out); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	return nil
}

// build makes the image: its base's layer, then a layer with its files.
func build(img Image, base *layer, epoch time.Time) (v1.Image, error) {
	files, err := fileLayer(img, base.tree)
	if err != nil {
		return nil, err
	}
	top, err := files.layer(epoch)
	if err != nil {
		return nil, err
	}
	cfg := &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		RootFS:       v1.RootFS{Type: "layers"}, // the diff IDs are appended
		Config: v1.Config{
			Entrypoint: img.Entrypoint,
			Cmd:        img.Cmd,
			User:       img.User,
			Env:        mergeEnv(baseEnv, img.Env),
			WorkingDir: img.WorkingDir,
			Labels:     img.Labels,
		},
	}
	v, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	return mutate.Append(v,
		mutate.Addendum{Layer: base.v1, History: history(epoch, "distroless "+img.Base.String()+" stand-in")},
		mutate.Addendum{Layer: top, History: history(epoch, "files")})
}

func history(epoch time.Time, what string) v1.History {
	return v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "gpupack test/images: " + what}
}

// mergeEnv sets each KEY=VALUE of add in env, in place where env has KEY
// already, as Docker's ENV does.
func mergeEnv(env, add []string) []string {
	out := append([]string(nil), env...)
next:
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		for i, old := range out {
			if key, _, _ := strings.Cut(old, "="); key == k {
				out[i] = kv
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// sourceDateEpoch is the time of every file and of the images:
// $SOURCE_DATE_EPOCH, or the Unix epoch.
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("images: SOURCE_DATE_EPOCH=%q: want seconds since 1970: %w", s, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}
