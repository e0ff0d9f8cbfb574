package contract

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
)

// Sign returns the AnnotationSignature value for a decision: an HMAC-SHA256,
// under the extender's key, of the pod UID, the node and the allocation
// annotation. Nobody without the key can make a pod's annotations pass Verify,
// so a user cannot forge a placement that the extender would trust.
func Sign(key []byte, podUID, node, allocation string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(podUID))
	m.Write([]byte{0})
	m.Write([]byte(node))
	m.Write([]byte{0})
	m.Write([]byte(allocation))
	return base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}

// Verify reports whether sig is Sign's value for the same inputs.
func Verify(key []byte, podUID, node, allocation, sig string) bool {
	want := Sign(key, podUID, node, allocation)
	return hmac.Equal([]byte(want), []byte(sig))
}
