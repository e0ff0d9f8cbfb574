package layout

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// module is the path every package of ours starts with.
const module = "github.com/gpupack/gpupack"

// rule is what one package's doc.go promises about its imports. Packages of
// ours are named relative to the module ("extender/policy").
type rule struct {
	// imports: the only packages of ours it may import directly.
	imports []string
	// notDependOn: import path prefixes that must not appear anywhere in
	// its dependencies, direct or not ("k8s.io/client-go", a package of
	// ours).
	notDependOn []string
	// notImport: packages it must not import directly (its own code must
	// not do this, even where a dependency does).
	notImport []string
	// onlyThirdParty, when set: the only modules outside the standard
	// library and ours it may import directly (import path prefixes).
	onlyThirdParty []string
}

// Prefixes that several rules name.
const (
	goNVML    = "github.com/NVIDIA/go-nvml"
	clientGo  = "k8s.io/client-go"
	cobra     = "github.com/spf13/cobra"
	pflag     = "github.com/spf13/pflag"
	ourNVML   = module + "/nvml"
	ourMock   = module + "/mock"
	extender  = module + "/extender"
	devPlugin = module + "/deviceplugin"
)

// rules: one per package of the module, each quoting the doc.go it comes
// from. A package missing here fails the test: say what it may import.
var rules = map[string]rule{
	// "depend on nothing but the Kubernetes API types and the standard
	// library, so that every component (cgo or not) can import it."
	"contract": {
		onlyThirdParty: []string{"k8s.io/api/", "k8s.io/apimachinery/"},
		notDependOn:    []string{clientGo, goNVML},
	},
	// "a pure function of the state it is given: no clients, no clocks,
	// no locks ... It must not depend on client-go, HTTP, or anything
	// with side effects."
	"extender/policy": {
		imports:     []string{"contract"},
		notDependOn: []string{clientGo, goNVML},
		notImport:   []string{"net/http", "os", "os/exec", "time", "math/rand", "math/rand/v2", "crypto/rand"},
	},
	// "It depends on client-go and the policy package; it knows nothing
	// of HTTP."
	"extender/cache": {
		imports:     []string{"contract", "extender/policy"},
		notDependOn: []string{goNVML},
		notImport:   []string{"net/http"},
	},
	// "It must not depend on a CLI library: cmd/gpupack-extender maps
	// flags onto it."
	"extender/config": {
		imports:     []string{"contract", "extender/policy"},
		notDependOn: []string{cobra, pflag, clientGo, goNVML},
	},
	// "It must not import go-nvml or anything else that needs cgo."
	"extender": {
		imports:     []string{"contract", "extender/cache", "extender/config", "extender/policy", "internal/version"},
		notDependOn: []string{goNVML, ourNVML, ourMock, devPlugin},
	},
	// "It reads cards through package nvml (real or mock) and pods through
	// a small PodSource; it must not depend on the extender." mock/job:
	// "package deviceplugin must not depend on it".
	"deviceplugin": {
		imports:     []string{"contract", "nvml"},
		notDependOn: []string{extender, ourMock},
	},
	// "It must not depend on a CLI library or on client-go:
	// cmd/gpupack-device-plugin maps flags onto it and reads the node's
	// labels."
	"deviceplugin/config": {
		imports:     []string{"contract"},
		notDependOn: []string{cobra, pflag, clientGo, goNVML},
	},
	// "Only nvml/, mock/ and deviceplugin/ may import go-nvml; the
	// extender and the kubectl plugin must not import this package."
	"nvml": {},
	// "It must not depend on the device plugin or the extender."
	"mock": {
		notDependOn: []string{devPlugin, extender},
	},
	// "It depends on packages mock and contract only".
	"mock/job": {
		imports:     []string{"contract", "mock"},
		notDependOn: []string{devPlugin, extender},
	},
	// "It depends on the contract package, client-go, prometheus/common's
	// expfmt and model, prometheus/client_model and the standard library
	// only: no cgo, no go-nvml, nothing of the extender."
	"inspect": {
		imports: []string{"contract"},
		onlyThirdParty: []string{clientGo + "/", "k8s.io/api/", "k8s.io/apimachinery/",
			"github.com/prometheus/common/expfmt", "github.com/prometheus/common/model", "github.com/prometheus/client_model/go"},
		notDependOn: []string{goNVML, extender},
	},
	// "It depends on extender/policy and contract only: no client-go, no
	// HTTP, no go-nvml (it builds with CGO_ENABLED=0)".
	"sim": {
		imports:     []string{"contract", "extender/policy"},
		notDependOn: []string{clientGo, goNVML},
		notImport:   []string{"net/http"},
	},
	// "what the commands share: the API client configuration and klog's
	// flags."
	"internal/cli": {
		notDependOn: []string{goNVML},
	},
	// "It is for tests only": see TestFixtureIsForTestsOnly.
	"internal/fixture": {
		imports: []string{"contract"},
	},
	"internal/layout": {},
	// "It depends on the standard library only, so that every command,
	// cgo or not, can import it."
	"internal/version": {
		imports:        []string{},
		onlyThirdParty: []string{},
	},
	// The commands are thin mains (flags, wiring, run) over the packages
	// above; those that run off GPU nodes stay free of cgo: "The extender,
	// the kubectl plugin and the simulator build with CGO_ENABLED=0"
	// (STYLE.md). Their doc.go says the same.
	"cmd/gpupack-extender": {
		imports:     []string{"extender", "extender/config", "extender/policy", "internal/cli", "internal/version"},
		notDependOn: []string{goNVML, ourNVML, ourMock, devPlugin},
	},
	"cmd/kubectl-inspect-gpushare": {
		imports:     []string{"contract", "inspect", "internal/cli", "internal/version"},
		notDependOn: []string{goNVML, ourNVML, ourMock, devPlugin, extender},
	},
	"cmd/gpupack-sim": {
		imports:     []string{"extender/policy", "sim"},
		notDependOn: []string{goNVML, clientGo, devPlugin},
	},
	"cmd/gpupack-device-plugin": {
		imports:     []string{"contract", "deviceplugin", "deviceplugin/config", "internal/cli", "internal/version", "mock", "mock/job", "nvml"},
		notDependOn: []string{extender},
	},
	"cmd/gpupack-train": {
		imports:     []string{"internal/version", "mock", "mock/job"},
		notDependOn: []string{extender, devPlugin, clientGo},
	},
}

// goNVMLImporters: "Only nvml/, mock/ and deviceplugin/ may import go-nvml".
var goNVMLImporters = []string{"nvml", "mock", "deviceplugin"}

// pkg is what `go list -json` says of one package of ours.
type pkg struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Imports    []string // direct, non-test
	Deps       []string // every dependency, direct or not, non-test
}

// list runs go list over the module, tests excluded (a test may import
// what its package must not).
func list(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Dir,GoFiles,Imports,Deps", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no package")
	}
	return pkgs
}

func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }

func ours(path string) bool { return path == module || strings.HasPrefix(path, module+"/") }

// standard: the standard library's paths have no dot in their first element.
func standard(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

// under reports whether path is one of prefixes or inside one: a prefix
// ending in "/" matches what starts with it, any other matches whole path
// elements ("k8s.io/client-go" is not a prefix of "k8s.io/client-gopher").
func under(path string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool {
		if strings.HasSuffix(p, "/") {
			return strings.HasPrefix(path, p)
		}
		return path == p || strings.HasPrefix(path, p+"/")
	})
}

// violations lists how p breaks r, and the module-wide rules.
func violations(p pkg, r rule) []string {
	var out []string
	name := rel(p.ImportPath)
	for _, imp := range p.Imports {
		switch {
		case ours(imp):
			if !slices.Contains(r.imports, rel(imp)) {
				out = append(out, "imports "+rel(imp)+", which its rule does not allow")
			}
		case standard(imp):
			if slices.Contains(r.notImport, imp) {
				out = append(out, "imports "+imp)
			}
		default:
			if slices.Contains(r.notImport, imp) || r.onlyThirdParty != nil && !under(imp, r.onlyThirdParty) {
				out = append(out, "imports "+imp)
			}
			if strings.HasPrefix(imp, goNVML) && !slices.Contains(goNVMLImporters, name) {
				out = append(out, "imports go-nvml: only "+strings.Join(goNVMLImporters, ", ")+" may")
			}
		}
	}
	for _, dep := range p.Deps {
		if under(dep, r.notDependOn) {
			out = append(out, "depends on "+dep)
		}
		if strings.HasPrefix(dep, module+"/cmd/") {
			out = append(out, "depends on a command, "+rel(dep))
		}
	}
	return out
}

func TestImportRules(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range list(t) {
		name := rel(p.ImportPath)
		seen[name] = true
		r, ok := rules[name]
		if !ok {
			t.Errorf("%s has no import rule: add one to rules in internal/layout/layout_test.go, quoting its doc.go", name)
			continue
		}
		if !slices.Contains(p.GoFiles, "doc.go") {
			t.Errorf("%s has no doc.go saying what it is for and what it must not depend on", name)
		}
		for _, v := range violations(p, r) {
			t.Errorf("%s %s", name, v)
		}
	}
	for name := range rules {
		if !seen[name] {
			t.Errorf("rule for %s, which is no package of the module any more", name)
		}
	}
}

// TestFixtureIsForTestsOnly: internal/fixture builds test objects; no
// package's own code may import it (go list's Imports leave tests out).
func TestFixtureIsForTestsOnly(t *testing.T) {
	for _, p := range list(t) {
		if slices.Contains(p.Imports, module+"/internal/fixture") {
			t.Errorf("%s imports internal/fixture outside its tests", rel(p.ImportPath))
		}
	}
}

// TestRulesCatch: the checks themselves, on made-up packages, so that a
// rule that cannot fail is seen failing.
func TestRulesCatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    pkg
		r    rule
		want int // violations
	}{
		{"allowed package of ours", pkg{ImportPath: module + "/sim", Imports: []string{module + "/contract"}}, rules["sim"], 0},
		{"package of ours not allowed", pkg{ImportPath: module + "/sim", Imports: []string{module + "/extender/cache"}}, rules["sim"], 1},
		{"client-go deep in the dependencies", pkg{ImportPath: module + "/extender/policy", Deps: []string{"k8s.io/client-go/rest"}}, rules["extender/policy"], 1},
		{"a clock in the policies", pkg{ImportPath: module + "/extender/policy", Imports: []string{"time"}}, rules["extender/policy"], 1},
		{"third party outside the allowed", pkg{ImportPath: module + "/contract", Imports: []string{"k8s.io/api/core/v1", "sigs.k8s.io/yaml"}}, rules["contract"], 1},
		{"go-nvml outside nvml, mock, deviceplugin", pkg{ImportPath: module + "/internal/cli", Imports: []string{goNVML + "/pkg/nvml"}}, rules["internal/cli"], 1},
		{"go-nvml in nvml", pkg{ImportPath: module + "/nvml", Imports: []string{goNVML + "/pkg/nvml"}}, rules["nvml"], 0},
		{"a command as a dependency", pkg{ImportPath: module + "/nvml", Deps: []string{module + "/cmd/gpupack-train"}}, rules["nvml"], 1},
		{"prefix is a path element, not a string prefix", pkg{ImportPath: module + "/sim", Deps: []string{"k8s.io/client-gopher"}}, rules["sim"], 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := violations(tc.p, tc.r); len(got) != tc.want {
				t.Errorf("violations = %q, want %d", got, tc.want)
			}
		})
	}
}
