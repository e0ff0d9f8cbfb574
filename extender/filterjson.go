package extender

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"sync"
)

// Filter's answer is written as json.Encoder writes its
// extenderv1.ExtenderFilterResult (filterAnswer.result), byte for byte
// (FuzzFilterAnswerJSON), but faster where a busy cluster makes it big:
// there most of thousands of nodes fail, and encoding/json writes a map of
// their reasons by sorting reflect.Values of its keys and escaping every
// string afresh. Here no map is made: the failed nodes' positions are
// sorted by name (byName), a name that needs no escaping (a Node's name
// never does) is written as it is, and each reason as encoding/json wrote
// it when it was made (evaluate shares a reason between the nodes that
// fail alike). All escaping is encoding/json's.

// answerBufs hold answers while they are written, for their memory.
var answerBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// writeFilterAnswer writes a's result and the newline after it to w.
func writeFilterAnswer(w io.Writer, a *filterAnswer) error {
	b := answerBufs.Get().(*bytes.Buffer)
	defer func() {
		b.Reset()
		answerBufs.Put(b)
	}()
	if err := appendFilterAnswer(b, a); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// appendFilterAnswer appends a's result as json.Encoder writes it, with
// the newline.
func appendFilterAnswer(b *bytes.Buffer, a *filterAnswer) error {
	enc := json.NewEncoder(b)
	b.WriteString(`{"Nodes":`)
	if err := encodeValue(enc, b, a.res.Nodes); err != nil {
		return err
	}
	b.WriteString(`,"NodeNames":`)
	if err := encodeValue(enc, b, a.res.NodeNames); err != nil {
		return err
	}
	failed, unresolvable := a.failedByName()
	b.WriteString(`,"FailedNodes":`)
	appendFailed(b, a, failed)
	b.WriteString(`,"FailedAndUnresolvableNodes":`)
	appendFailed(b, a, unresolvable)
	b.WriteString(`,"Error":`)
	b.Write(appendQuoted(b.AvailableBuffer(), a.res.Error))
	b.WriteString("}\n")
	return nil
}

// failedByName are the keys of result's two maps, FailedNodes and
// FailedAndUnresolvableNodes, as positions in names, in the order
// encoding/json writes a map's keys (byte order): each name once, at the
// last of its positions that fails that way, as result fills the maps.
func (a *filterAnswer) failedByName() (failed, unresolvable []int) {
	if len(a.failed) == 0 {
		return nil, nil
	}
	for _, i := range byName(a.names, a.failed) {
		_, u := a.why(i)
		to := &failed
		if u {
			to = &unresolvable
		}
		if n := len(*to); n > 0 && a.names[(*to)[n-1]] == a.names[i] {
			(*to)[n-1] = i // the same name, at a later position
			continue
		}
		*to = append(*to, i)
	}
	return failed, unresolvable
}

// byName returns the positions at (in names; not empty) ordered by name
// in byte order, then by position. A cluster's node names share long
// prefixes ("gpu-node-0042.cluster.example.com"), so comparing two of them
// reads many bytes. Here each is first sorted as a number: the 5 bytes
// after the prefix that all of them share (a name that ends there padded
// with zeros, which sort before any byte as its end does), above its
// position. Names whose 5 bytes are alike are then sorted by their bytes.
func byName(names []string, at []int) []int {
	const keyBytes, posBits = 5, 24
	if len(names) > 1<<posBits {
		return byNameSlow(names, at)
	}
	shared := names[at[0]]
	for _, i := range at[1:] {
		n := names[i]
		k := 0
		for k < len(shared) && k < len(n) && shared[k] == n[k] {
			k++
		}
		shared = shared[:k]
	}
	from := len(shared)
	keyed := make([]uint64, len(at))
	for j, i := range at {
		var key uint64
		n := names[i]
		for k := from; k < from+keyBytes; k++ {
			key <<= 8
			if k < len(n) {
				key |= uint64(n[k])
			}
		}
		keyed[j] = key<<posBits | uint64(i)
	}
	slices.Sort(keyed)
	out := make([]int, len(keyed))
	for j, v := range keyed {
		out[j] = int(v & (1<<posBits - 1))
	}
	// Runs of alike keys, by bytes (positions are in order within a run).
	for j := 0; j < len(keyed); {
		k := j + 1
		for k < len(keyed) && keyed[k]>>posBits == keyed[j]>>posBits {
			k++
		}
		if k-j > 1 {
			slices.SortStableFunc(out[j:k], func(x, y int) int { return strings.Compare(names[x][from:], names[y][from:]) })
		}
		j = k
	}
	return out
}

// byNameSlow is byName by comparing bytes alone, for more names than a
// key has bits of position for.
func byNameSlow(names []string, at []int) []int {
	out := slices.Clone(at)
	slices.SortStableFunc(out, func(x, y int) int { return strings.Compare(names[x], names[y]) })
	return out
}

// appendFailed appends the map of the nodes at positions at (failedByName)
// as encoding/json writes it.
func appendFailed(b *bytes.Buffer, a *filterAnswer, at []int) {
	b.WriteByte('{')
	for k, i := range at {
		if k > 0 {
			b.WriteByte(',')
		}
		b.Write(appendQuoted(b.AvailableBuffer(), a.names[i]))
		b.WriteByte(':')
		m, _ := a.why(i)
		b.Write(m.json)
	}
	b.WriteByte('}')
}

// appendQuoted appends s to dst as encoding/json writes a string: quoted
// as it is where it is plainJSON, else as json.Marshal writes it.
func appendQuoted(dst []byte, s string) []byte {
	if plainJSON(s) {
		return append(append(append(dst, '"'), s...), '"')
	}
	q, err := json.Marshal(s)
	if err != nil {
		// A string always encodes.
		panic(err)
	}
	return append(dst, q...)
}

// plainJSON reports whether s is printable ASCII that encoding/json writes
// as it is, quoted (with HTML escaping, as json.Encoder and json.Marshal
// have by default).
func plainJSON(s string) bool {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// encodeValue appends v as enc writes it, without the newline enc ends a
// value with.
func encodeValue(enc *json.Encoder, b *bytes.Buffer, v any) error {
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1)
	return nil
}
