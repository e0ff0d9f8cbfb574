package sim

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNodes(t *testing.T) {
	tests := []struct {
		name, csv string
		want      []Node
		err       string
	}{{
		name: "columns in any order",
		csv:  "model,sn,gpu,cpu_milli,memory_mib\nT4,n1,2,64000,262144\n,n2,0,32000,1024\n",
		want: []Node{{Name: "n1", CPUMilli: 64000, MemoryMiB: 262144, GPUs: 2, Model: "T4"}, {Name: "n2", CPUMilli: 32000, MemoryMiB: 1024}},
	}, {
		name: "missing column",
		csv:  "sn,cpu_milli,gpu,model\nn1,1,1,T4\n",
		err:  "nodes.csv:1: missing column memory_mib",
	}, {
		name: "negative number",
		csv:  "sn,cpu_milli,memory_mib,gpu,model\nn1,64000,1,2,T4\nn2,-5,1,2,T4\n",
		err:  "nodes.csv:3:2: column cpu_milli: -5 is negative",
	}, {
		name: "not a number",
		csv:  "sn,cpu_milli,memory_mib,gpu,model\nn1,64000,lots,2,T4\n",
		err:  `nodes.csv:2:3: column memory_mib: "lots" is not a whole number`,
	}, {
		name: "cards without a model",
		csv:  "sn,cpu_milli,memory_mib,gpu,model\nn1,64000,1,2,\n",
		err:  "nodes.csv:2:5: column model: empty model on a node with 2 cards",
	}, {
		name: "duplicate node",
		csv:  "sn,cpu_milli,memory_mib,gpu,model\nn1,1,1,1,T4\nn1,1,1,1,T4\n",
		err:  `nodes.csv:3:1: column sn: node "n1" already on line 2`,
	}, {
		name: "short line",
		csv:  "sn,cpu_milli,memory_mib,gpu,model\nn1,1,1\n",
		err:  "nodes.csv:2: 3 fields, the header has 5",
	}, {
		name: "empty",
		csv:  "",
		err:  "nodes.csv:1: empty file",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNodes("nodes.csv", strings.NewReader(tt.csv))
			checkErr(t, err, tt.err)
			if tt.err == "" {
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("nodes (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestParsePods(t *testing.T) {
	const header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
	tests := []struct {
		name, csv string
		want      []Pod
		err       string
	}{{
		name: "kinds and specs",
		csv:  header + "p0,8000,100,0,0,\np1,4000,200,1,500,\np2,4000,200,1,1000,T4|G2\np3,1,1,8,1000,\n",
		want: []Pod{
			{Name: "p0", CPUMilli: 8000, MemoryMiB: 100},
			{Name: "p1", CPUMilli: 4000, MemoryMiB: 200, NumGPU: 1, GPUMilli: 500},
			{Name: "p2", CPUMilli: 4000, MemoryMiB: 200, NumGPU: 1, GPUMilli: 1000, Models: []string{"T4", "G2"}},
			{Name: "p3", CPUMilli: 1, MemoryMiB: 1, NumGPU: 8, GPUMilli: 1000},
		},
	}, {
		name: "no gpu_spec column (multigpu files)",
		csv:  "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np1,1,1,1,300\n",
		want: []Pod{{Name: "p1", CPUMilli: 1, MemoryMiB: 1, NumGPU: 1, GPUMilli: 300}},
	}, {
		name: "missing columns",
		csv:  "name,cpu_milli,num_gpu\np1,1,1\n",
		err:  "pods.csv:1: missing column memory_mib, gpu_milli",
	}, {
		name: "unknown model",
		csv:  header + "p1,1,1,1,300,T4\np2,1,1,1,300,A100\n",
		err:  `pods.csv:3:6: column gpu_spec: unknown model "A100": the nodes have G2, T4`,
	}, {
		name: "negative cards",
		csv:  header + "p1,1,1,-1,300,\n",
		err:  "pods.csv:2:4: column num_gpu: -1 is negative",
	}, {
		name: "more than a card",
		csv:  header + "p1,1,1,1,1500,\n",
		err:  "pods.csv:2:5: column gpu_milli: 1500 is more than one card (1000)",
	}, {
		name: "GPU pod asking nothing",
		csv:  header + "p1,1,1,2,0,\n",
		err:  "pods.csv:2:5: column gpu_milli: 0 with num_gpu 2",
	}, {
		name: "durations from the trace's times (at least a second)",
		csv:  "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time\np1,1,1,1,300,100,700\np2,1,1,0,0,5,5\n",
		want: []Pod{{Name: "p1", CPUMilli: 1, MemoryMiB: 1, NumGPU: 1, GPUMilli: 300, Duration: 600}, {Name: "p2", CPUMilli: 1, MemoryMiB: 1, Duration: 1}},
	}, {
		name: "deleted before created",
		csv:  "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time\np1,1,1,1,300,700,100\n",
		err:  "pods.csv:2:7: column deletion_time: 100 is before creation_time 700",
	}, {
		name: "a time that is no number",
		csv:  "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time\np1,1,1,1,300,,100\n",
		err:  `pods.csv:2:6: column creation_time: "" is not a whole number`,
	}, {
		name: "one time column alone",
		csv:  "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time\np1,1,1,1,300,100\n",
		err:  "pods.csv:1: creation_time and deletion_time come together",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePods("pods.csv", strings.NewReader(tt.csv), []string{"G2", "T4"})
			checkErr(t, err, tt.err)
			if tt.err == "" {
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("pods (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var pe *ParseError
	if err == nil || !strings.HasPrefix(err.Error(), want) || !errors.As(err, &pe) {
		t.Fatalf("error = %v, want a *ParseError starting %q", err, want)
	}
}

func TestPodKindAndRequest(t *testing.T) {
	tests := []struct {
		pod        Pod
		kind       Kind
		mem, count int64
	}{
		{Pod{NumGPU: 0}, CPUOnly, -1, -1},
		{Pod{NumGPU: 1, GPUMilli: 460}, Shared, 460, 0},
		{Pod{NumGPU: 1, GPUMilli: 1000}, WholeCard, 0, 1},
		{Pod{NumGPU: 4, GPUMilli: 1000}, MultiCard, 0, 4},
		{Pod{NumGPU: 2, GPUMilli: 500}, MultiCard, 1000, 2},
	}
	for _, tt := range tests {
		if got := tt.pod.Kind(); got != tt.kind {
			t.Errorf("%+v: kind %v, want %v", tt.pod, got, tt.kind)
		}
		r := tt.pod.Request()
		if tt.mem < 0 {
			if len(r.Containers) != 0 {
				t.Errorf("%+v: containers %+v, want none", tt.pod, r.Containers)
			}
			continue
		}
		if c := r.Containers[0]; c.Mem != tt.mem || c.Count != tt.count {
			t.Errorf("%+v: container %+v, want mem %d count %d", tt.pod, c, tt.mem, tt.count)
		}
	}
}

func TestParseSeeds(t *testing.T) {
	tests := []struct {
		in   string
		want []int64
		err  bool
	}{
		{"42-45", []int64{42, 43, 44, 45}, false},
		{"42,45", []int64{42, 45}, false},
		{"42-43,50", []int64{42, 43, 50}, false},
		{"7", []int64{7}, false},
		{"45-42", nil, true},
		{"x", nil, true},
		{"", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseSeeds(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("ParseSeeds(%q) error %v, want error %v", tt.in, err, tt.err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseSeeds(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}
