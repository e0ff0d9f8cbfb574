package images

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// FromDockerfile reads the final stage of a Dockerfile and returns the image
// it describes, with ref as its name. built maps each path a COPY
// --from=<stage> takes from an earlier stage (e.g. /out/gpupack-extender) to
// the file built on this machine.
//
// The final stage may start FROM gcr.io/distroless/static* (BaseStatic) or
// gcr.io/distroless/base* (BaseGlibc), a nonroot tag meaning user 65532 in
// /home/nonroot, and use COPY --from=<earlier stage> [--chmod=<octal>]
// [--link], ENV, USER, ENTRYPOINT and CMD in exec form, WORKDIR, LABEL and
// ARG. Anything else (RUN, ADD, a COPY from the build context, a shell-form
// command...) is an error naming the instruction and its line: it cannot be
// reproduced without a container engine. Variables are substituted as Docker
// does, from the ARGs' defaults (no build arguments), the automatic platform
// ARGs (TARGETARCH... of this machine) and the ENVs, the base's included.
func FromDockerfile(dockerfile, ref string, built map[string]string) (Image, error) {
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		return Image{}, fmt.Errorf("images: %w", err)
	}
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		return Image{}, fmt.Errorf("images: %s: %w", dockerfile, err)
	}
	stages, meta, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return Image{}, fmt.Errorf("images: %s: %w", dockerfile, err)
	}
	if len(stages) == 0 {
		return Image{}, fmt.Errorf("images: %s: no FROM", dockerfile)
	}
	s := &stage{
		file:    dockerfile,
		lex:     shell.NewLex(res.EscapeToken),
		earlier: stages[:len(stages)-1],
		built:   built,
		args:    map[string]string{},
	}
	if s.global, err = s.globalArgs(meta); err != nil {
		return Image{}, err
	}
	if err := s.from(stages[len(stages)-1]); err != nil {
		return Image{}, err
	}
	for _, c := range stages[len(stages)-1].Commands {
		if err := s.apply(c); err != nil {
			return Image{}, err
		}
	}
	s.img.Ref = ref
	return s.img, nil
}

// stage is the final stage being read.
type stage struct {
	file    string
	lex     *shell.Lex
	earlier []instructions.Stage
	built   map[string]string
	global  map[string]string // the ARGs before the first FROM
	args    map[string]string // the stage's ARGs
	img     Image
	cmdSet  bool
}

// globalArgs are the automatic platform ARGs and the defaults of the ARGs
// before the first FROM.
func (s *stage) globalArgs(meta []instructions.ArgCommand) (map[string]string, error) {
	platform := "linux/" + runtime.GOARCH
	args := map[string]string{
		"BUILDPLATFORM": platform, "BUILDOS": "linux", "BUILDARCH": runtime.GOARCH,
		"TARGETPLATFORM": platform, "TARGETOS": "linux", "TARGETARCH": runtime.GOARCH,
	}
	for _, a := range meta {
		for _, kv := range a.Args {
			if kv.Value == nil {
				continue
			}
			v, err := expand(s.lex, *kv.Value, args, nil)
			if err != nil {
				return nil, s.errorf(&a, "%w", err)
			}
			args[kv.Key] = v
		}
	}
	return args, nil
}

// from sets the base, and what a distroless nonroot tag sets.
func (s *stage) from(st instructions.Stage) error {
	base, err := expand(s.lex, st.BaseName, s.global, nil)
	if err != nil {
		return fmt.Errorf("images: %s:%d: FROM: %w", s.file, line(st.Location), err)
	}
	repo, tag := base, ""
	if i := strings.Index(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo, tag = repo[:i], repo[i+1:]
	}
	switch {
	case strings.HasPrefix(repo, "gcr.io/distroless/static"):
		s.img.Base = BaseStatic
	case strings.HasPrefix(repo, "gcr.io/distroless/base"):
		s.img.Base = BaseGlibc
	default:
		return fmt.Errorf("images: %s:%d: FROM %s: unsupported base; want gcr.io/distroless/static* or gcr.io/distroless/base*, which the builder stands in for", s.file, line(st.Location), base)
	}
	if strings.Contains(tag, "nonroot") {
		s.img.User, s.img.WorkingDir = strconv.Itoa(nonroot), "/home/nonroot"
	}
	return nil
}

// apply applies an instruction of the final stage to the image.
func (s *stage) apply(c instructions.Command) error {
	switch c := c.(type) {
	case *instructions.ArgCommand:
		for _, kv := range c.Args {
			if kv.Value == nil {
				if v, ok := s.global[kv.Key]; ok {
					s.args[kv.Key] = v
				}
				continue
			}
			v, err := s.expand(*kv.Value)
			if err != nil {
				return s.errorf(c, "%w", err)
			}
			s.args[kv.Key] = v
		}
	case *instructions.EnvCommand:
		if err := c.Expand(s.expand); err != nil {
			return s.errorf(c, "%w", err)
		}
		for _, kv := range c.Env {
			s.img.Env = mergeEnv(s.img.Env, []string{kv.String()})
		}
	case *instructions.LabelCommand:
		if err := c.Expand(s.expand); err != nil {
			return s.errorf(c, "%w", err)
		}
		if s.img.Labels == nil {
			s.img.Labels = map[string]string{}
		}
		for _, kv := range c.Labels {
			s.img.Labels[kv.Key] = kv.Value
		}
	case *instructions.UserCommand:
		if err := c.Expand(s.expand); err != nil {
			return s.errorf(c, "%w", err)
		}
		s.img.User = c.User
	case *instructions.WorkdirCommand:
		if err := c.Expand(s.expand); err != nil {
			return s.errorf(c, "%w", err)
		}
		wd := c.Path
		if !path.IsAbs(wd) {
			wd = path.Join("/", s.img.WorkingDir, wd)
		}
		s.img.WorkingDir = path.Clean(wd)
	case *instructions.EntrypointCommand:
		if c.PrependShell {
			return s.errorf(c, "shell form: want the exec form, [\"/path/to/binary\", \"arg\"...]: a distroless image has no shell")
		}
		s.img.Entrypoint = slices.Clone(c.CmdLine)
		if !s.cmdSet {
			s.img.Cmd = nil
		}
	case *instructions.CmdCommand:
		if c.PrependShell {
			return s.errorf(c, "shell form: want the exec form, [\"arg\"...]: a distroless image has no shell")
		}
		s.img.Cmd, s.cmdSet = slices.Clone(c.CmdLine), true
	case *instructions.CopyCommand:
		return s.copy(c)
	default:
		return s.errorf(c, "not supported in the final stage without a container engine; want COPY --from=<stage>, ENV, USER, ENTRYPOINT, CMD, WORKDIR, LABEL or ARG")
	}
	return nil
}

// copy adds the files a COPY --from=<earlier stage> takes from built.
func (s *stage) copy(c *instructions.CopyCommand) error {
	if err := c.Expand(s.expand); err != nil {
		return s.errorf(c, "%w", err)
	}
	switch {
	case c.From == "":
		return s.errorf(c, "copying from the build context is not supported; want COPY --from=<build stage>")
	case c.Chown != "", c.Parents, len(c.ExcludePatterns) > 0, len(c.SourceContents) > 0:
		return s.errorf(c, "--chown, --parents, --exclude and here-documents are not supported; want COPY --from=<stage> [--chmod=<octal>] [--link] <src>... <dst>")
	case !s.isStage(c.From):
		return s.errorf(c, "--from=%s: not an earlier stage of %s (an image cannot be pulled)", c.From, s.file)
	}
	var mode os.FileMode
	if c.Chmod != "" {
		m, err := strconv.ParseUint(c.Chmod, 8, 32)
		if err != nil || m > 0o777 {
			return s.errorf(c, "--chmod=%s: want an octal mode from 0 to 0777", c.Chmod)
		}
		mode = os.FileMode(m)
	}
	dst := c.DestPath
	toDir := len(c.SourcePaths) > 1 || strings.HasSuffix(dst, "/") || dst == "." || strings.HasSuffix(dst, "/.")
	if !path.IsAbs(dst) {
		dst = path.Join("/", s.img.WorkingDir, dst)
	}
	for _, src := range c.SourcePaths {
		src = path.Join("/", src)
		host, ok := s.built[src]
		if !ok {
			return s.errorf(c, "--from=%s %s: no file built for %s; built has %q", c.From, src, src, slices.Sorted(maps.Keys(s.built)))
		}
		p := path.Clean(dst)
		if toDir {
			p = path.Join(dst, path.Base(src))
		}
		// A later COPY to the same path replaces the file, as in Docker.
		s.img.Files = slices.DeleteFunc(s.img.Files, func(f File) bool { return f.Path == p })
		s.img.Files = append(s.img.Files, File{Path: p, Source: host, Mode: mode})
	}
	return nil
}

// isStage says whether name (or index) is a stage before the final one.
func (s *stage) isStage(name string) bool {
	if i, err := strconv.Atoi(name); err == nil {
		return i >= 0 && i < len(s.earlier)
	}
	return slices.ContainsFunc(s.earlier, func(st instructions.Stage) bool {
		return st.Name != "" && st.Name == strings.ToLower(name)
	})
}

func (s *stage) expand(word string) (string, error) {
	return expand(s.lex, word, s.args, mergeEnv(baseEnv, s.img.Env))
}

// expand substitutes the variables in word as Docker does, from vars and
// env, env winning (an ENV overrides an ARG of the same name).
func expand(lex *shell.Lex, word string, vars map[string]string, env []string) (string, error) {
	all := make([]string, 0, len(vars)+len(env))
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		all = append(all, k+"="+vars[k])
	}
	out, _, err := lex.ProcessWord(word, shell.EnvsFromSlice(append(all, env...)))
	return out, err
}

// errorf is an error about instruction c.
func (s *stage) errorf(c instructions.Command, format string, args ...any) error {
	return fmt.Errorf("images: %s:%d: %s: "+format,
		append([]any{s.file, line(c.Location()), strings.ToUpper(c.Name())}, args...)...)
}

func line(loc []parser.Range) int {
	if len(loc) == 0 {
		return 0
	}
	return loc[0].Start.Line
}
