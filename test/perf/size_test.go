package perf

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The benchmark's size, from the environment (make throughput passes
// NODES and PODS as these).
const (
	nodesEnv = "GPUPACK_THROUGHPUT_NODES"
	podsEnv  = "GPUPACK_THROUGHPUT_PODS"
	// proxyEnv=false leaves out the proxy that times extender calls.
	proxyEnv = "GPUPACK_THROUGHPUT_PROXY"
	// profileEnv, when set, is where the extender's CPU profile over the
	// gpupack run goes (profileExtender).
	profileEnv = "GPUPACK_THROUGHPUT_CPUPROFILE"

	defaultNodes = 1000
	defaultPods  = 2000

	// maxPodGiB is the largest pod's share of a card; pods ask 1 to it.
	maxPodGiB = 16
	// maxPodsPerNode pods fit a node whatever their sizes and however
	// they are placed: each of its 8 cards of 80 GiB holds five pods of
	// the largest size (80/16), and 40 pods ask 4 of its 96 CPUs and fewer
	// than its 110 pods.
	maxPodsPerNode = 8 * 80 / maxPodGiB
)

// size is how many nodes the benchmark makes and how many pods it
// schedules on them, each run.
type size struct{ nodes, pods int }

// sizeFromEnv reads the size from getenv, defaulting what is unset.
func sizeFromEnv(getenv func(string) string) (size, error) {
	sz := size{nodes: defaultNodes, pods: defaultPods}
	for _, f := range []struct {
		name string
		to   *int
	}{{nodesEnv, &sz.nodes}, {podsEnv, &sz.pods}} {
		v := getenv(f.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n <= 0 {
			return size{}, fmt.Errorf("%s=%q: want a positive whole number, e.g. make throughput NODES=5000 PODS=20000", f.name, v)
		}
		*f.to = n
	}
	if sz.pods > maxPodsPerNode*sz.nodes {
		return size{}, fmt.Errorf("%s=%d: at most %d pods (%d a node) surely fit %d nodes of 8 x 80 GiB with pods of up to %d GiB; ask fewer pods or more nodes (%s)",
			podsEnv, sz.pods, maxPodsPerNode*sz.nodes, maxPodsPerNode, sz.nodes, maxPodGiB, nodesEnv)
	}
	return sz, nil
}

// proxyFromEnv reads whether to time extender calls in a proxy (the
// default) from getenv.
func proxyFromEnv(getenv func(string) string) (bool, error) {
	v := strings.TrimSpace(getenv(proxyEnv))
	if v == "" {
		return true, nil
	}
	on, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want true or false", proxyEnv, v)
	}
	return on, nil
}

func TestProxyFromEnv(t *testing.T) {
	for _, tc := range []struct {
		value   string
		want    bool
		wantErr bool
	}{
		{value: "", want: true},
		{value: "true", want: true},
		{value: "1", want: true},
		{value: "false", want: false},
		{value: " 0 ", want: false},
		{value: "off", wantErr: true},
	} {
		t.Run(tc.value, func(t *testing.T) {
			got, err := proxyFromEnv(func(k string) string { return map[string]string{proxyEnv: tc.value}[k] })
			switch {
			case tc.wantErr:
				if err == nil || !strings.Contains(err.Error(), proxyEnv) {
					t.Fatalf("error %v, want one naming %s", err, proxyEnv)
				}
			case err != nil:
				t.Fatal(err)
			case got != tc.want:
				t.Fatalf("proxy %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSizeFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    size
		wantErr string // a part of the error
	}{
		{name: "defaults", want: size{nodes: 1000, pods: 2000}},
		{name: "both", env: map[string]string{nodesEnv: "5000", podsEnv: "20000"}, want: size{nodes: 5000, pods: 20000}},
		{name: "nodes only", env: map[string]string{nodesEnv: "200"}, want: size{nodes: 200, pods: 2000}},
		{name: "spaces", env: map[string]string{podsEnv: " 400 "}, want: size{nodes: 1000, pods: 400}},
		// 10 nodes hold 40 pods each: 400 fit, 401 might not.
		{name: "full", env: map[string]string{nodesEnv: "10", podsEnv: "400"}, want: size{nodes: 10, pods: 400}},
		{name: "too many pods", env: map[string]string{nodesEnv: "10", podsEnv: "401"}, wantErr: podsEnv + "=401: at most 400 pods"},
		{name: "not a number", env: map[string]string{nodesEnv: "5k"}, wantErr: nodesEnv + `="5k": want a positive whole number`},
		{name: "zero", env: map[string]string{podsEnv: "0"}, wantErr: podsEnv + `="0"`},
		{name: "negative", env: map[string]string{nodesEnv: "-1"}, wantErr: nodesEnv + `="-1"`},
		{name: "fraction", env: map[string]string{podsEnv: "1.5"}, wantErr: podsEnv + `="1.5"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sizeFromEnv(func(k string) string { return tc.env[k] })
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case got != tc.want:
				t.Fatalf("size %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestProfileExtender: the profile's parts are written one by one until
// stop, and a failed read is reported.
func TestProfileExtender(t *testing.T) {
	var fail atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, "no profile", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "part for %s", r.URL.Query().Get("seconds"))
	}))
	defer srv.Close()
	url := func(seconds int) string { return srv.URL + "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds) }
	prefix := filepath.Join(t.TempDir(), "cpu")
	stop := profileExtender(t.Context(), url, prefix)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(prefix + ".2"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no second part written")
		}
	}
	parts, err := stop()
	if err != nil || parts < 2 {
		t.Fatalf("stop: %d parts, %v; want 2 or more, no error", parts, err)
	}
	for k := 1; k <= parts; k++ {
		data, err := os.ReadFile(fmt.Sprintf("%s.%d", prefix, k))
		if err != nil || string(data) != fmt.Sprintf("part for %d", profilePart) {
			t.Errorf("part %d: %q, %v", k, data, err)
		}
	}

	fail.Store(true)
	stop = profileExtender(t.Context(), url, filepath.Join(t.TempDir(), "cpu"))
	time.Sleep(100 * time.Millisecond)
	if _, err := stop(); err == nil || !strings.Contains(err.Error(), "no profile") {
		t.Errorf("stop after a failed read: %v, want its error", err)
	}
}
