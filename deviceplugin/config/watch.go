package config

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Watcher notices when a node's configuration changes: its label names
// another configuration, or the selected file's content changes (a mounted
// ConfigMap is updated in place by the kubelet).
type Watcher struct {
	Source Source
	// Labels reads the node's labels (nil: none, as for Source.File).
	Labels func(context.Context) (map[string]string, error)
	// Every is how often the labels and the file are read.
	Every time.Duration
	// Check accepts a new selection (nil) or refuses it (the node keeps
	// what it runs with).
	Check func(*Selection) error
	// Refused is told why, once for each distinct refusal in a row.
	Refused func(error)
}

// Wait returns the first selection other than current that Check accepts,
// or ctx's error when ctx ends first.
func (w Watcher) Wait(ctx context.Context, current *Selection) (*Selection, error) {
	var next *Selection
	last := ""
	refuse := func(err error) {
		if err.Error() != last && w.Refused != nil {
			w.Refused(err)
		}
		last = err.Error()
	}
	err := wait.PollUntilContextCancel(ctx, w.Every, false, func(ctx context.Context) (bool, error) {
		var labels map[string]string
		if w.Labels != nil {
			l, err := w.Labels(ctx)
			if err != nil {
				refuse(fmt.Errorf("reading the node's labels: %w", err))
				return false, nil
			}
			labels = l
		}
		sel, err := w.Source.Select(labels)
		if err == nil && !sel.Same(current) && w.Check != nil {
			err = w.Check(sel)
		}
		switch {
		case err != nil:
			refuse(err)
			return false, nil
		case sel.Same(current):
			last = ""
			return false, nil
		}
		next = sel
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return next, nil
}
