package mock

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseStartTime(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    uint64
		wantErr string
	}{
		{"plain", fakeStat(42, "train", 5000), 5000, ""},
		{"a command with spaces and parentheses", fakeStat(42, "my (odd) job) S 1 2", 77), 77, ""},
		{"a command of only parentheses", fakeStat(42, ")(", 9), 9, ""},
		{"no command", "42 S 1 2 3", 0, "no command name"},
		{"truncated after the command", "42 (train)", 0, "0 fields after the command name"},
		{"truncated before the start time", "42 (train) S 1 42 42 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0", 0, "19 fields"},
		{"a start time that is not a number", strings.Replace(fakeStat(42, "train", 5000), " 5000 ", " 5k ", 1), 0, `start time "5k"`},
		{"empty", "", 0, "no command name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStartTime([]byte(tt.stat))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseStartTime = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestParseNSpid(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    []int
		wantErr string
	}{
		{"host process", "Name:\tx\nNSpid:\t4242\nPPid:\t1\n", []int{4242}, ""},
		{"in a container", "Name:\tx\nNSpid:\t4242\t7\n", []int{4242, 7}, ""},
		{"two levels down", "NSpid:\t4242\t7\t1\n", []int{4242, 7, 1}, ""},
		{"no NSpid line (a kernel before 4.1)", "Name:\tx\nPid:\t4242\n", nil, "no NSpid line"},
		{"empty NSpid", "NSpid:\n", nil, "empty NSpid"},
		{"garbage", "NSpid:\t42\tx\n", nil, "not a list of PIDs"},
		{"a negative PID", "NSpid:\t42\t-1\n", nil, "not a list of PIDs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseNSpid([]byte(tt.status))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("NSpid (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseNamespaceLink(t *testing.T) {
	tests := []struct {
		link string
		want uint64
		ok   bool
	}{
		{"pid:[4026531836]", 4026531836, true},
		{"net:[4026531836]", 0, false},
		{"pid:[]", 0, false},
		{"pid:[0]", 0, false},
		{"pid:[12", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.link, func(t *testing.T) {
			got, err := parseNamespaceLink(tt.link)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("parseNamespaceLink = %d, %v; want %d (ok %v)", got, err, tt.want, tt.ok)
			}
		})
	}
}

// TestSelfIdentity reads this process's identity as a job does.
func TestSelfIdentity(t *testing.T) {
	id, err := SelfIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if id.PID != os.Getpid() || id.PIDNamespace == 0 || id.StartTime == 0 {
		t.Errorf("SelfIdentity = %+v", id)
	}
}

// FuzzProcFiles: no /proc file, however malformed, makes a parser panic.
func FuzzProcFiles(f *testing.F) {
	f.Add([]byte(fakeStat(42, "a (b) c", 5000)))
	f.Add([]byte("Name:\tx\nNSpid:\t4242\t7\n"))
	f.Add([]byte("42 (x)"))
	f.Add([]byte("pid:[4026531836]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseStartTime(b)
		_, _ = parseNSpid(b)
		_, _ = parseNamespaceLink(string(b))
	})
}
