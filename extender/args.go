package extender

import (
	"encoding/json"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/gpupack/gpupack/extender/cache"
)

// extenderArgs is extenderv1.ExtenderArgs as filter and prioritize decode
// it: the same fields, so the same JSON (no tags: kube-scheduler writes the
// Go names, and encoding/json matches keys without regard to case), with
// the node names read by namesJSON.
type extenderArgs struct {
	Pod       *corev1.Pod
	Nodes     *corev1.NodeList
	NodeNames *namesJSON
}

// decodeArgs decodes the body of a filter or prioritize call.
func (s *Server) decodeArgs(r *http.Request) (*extenderv1.ExtenderArgs, error) {
	a := extenderArgs{NodeNames: &namesJSON{cache: s.cache}}
	if err := decode(r, &a); err != nil {
		return nil, err
	}
	args := &extenderv1.ExtenderArgs{Pod: a.Pod, Nodes: a.Nodes}
	// Left as it was when the body has no names (a null sets it nil).
	if a.NodeNames != nil && a.NodeNames.set {
		args.NodeNames = &a.NodeNames.names
	}
	return args, nil
}

// namesJSON decodes a JSON array of node names to what encoding/json
// makes of it as a []string, faster: the names of a request that names a
// cluster's thousands of nodes are plain ASCII, and each is the cache's
// own copy of the name where the cache knows the node (cache.Intern).
// Anything else (an escape, a byte outside printable ASCII, an element
// that is not a string) is left to encoding/json.
type namesJSON struct {
	cache *cache.Cache
	names []string
	set   bool // UnmarshalJSON was called
}

func (n *namesJSON) UnmarshalJSON(data []byte) error {
	n.set = true
	ok := false
	intern := func(fn func(intern func([]byte) string)) {
		fn(func(b []byte) string { return string(b) })
	}
	if n.cache != nil {
		intern = n.cache.Intern
	}
	intern(func(intern func([]byte) string) {
		n.names, ok = plainNames(data, n.names[:0], intern)
	})
	if ok {
		return nil
	}
	n.names = nil
	return json.Unmarshal(data, &n.names)
}

// plainNames appends to out the strings of the JSON array data, each made
// by intern from its bytes, and tells whether data was such an array of
// plain strings only: no escape, nothing outside printable ASCII (there,
// a Go string of the bytes is what encoding/json makes of them too).
func plainNames(data []byte, out []string, intern func([]byte) string) ([]string, bool) {
	i := skipSpace(data, 0)
	if i == len(data) || data[i] != '[' {
		return out, false
	}
	if out == nil {
		out = []string{} // [] is an empty list, not none
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		return out, skipSpace(data, i+1) == len(data)
	}
	for {
		if i == len(data) || data[i] != '"' {
			return out, false
		}
		start := i + 1
		for i = start; i < len(data) && data[i] != '"'; i++ {
			if c := data[i]; c == '\\' || c < 0x20 || c >= 0x7f {
				return out, false
			}
		}
		if i == len(data) {
			return out, false
		}
		out = append(out, intern(data[start:i]))
		i = skipSpace(data, i+1)
		if i == len(data) {
			return out, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case ']':
			return out, skipSpace(data, i+1) == len(data)
		default:
			return out, false
		}
	}
}

// skipSpace is the index of the first byte of data at or after i that is
// not JSON white space.
func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}
