package cluster

import (
	"fmt"
	"path/filepath"

	"github.com/gpupack/gpupack/test/images"
)

// The images real nodes run, built from this checkout: ours from
// deploy/docker's Dockerfiles (the chart's repositories, tag ImageTag).
const (
	ExtenderImage     = "ghcr.io/gpupack/gpupack-extender:" + ImageTag
	DevicePluginImage = "ghcr.io/gpupack/gpupack-device-plugin:" + ImageTag
	TrainImage        = "ghcr.io/gpupack/gpupack-train:" + ImageTag
	// SchedulerImage is a stand-in for kube-scheduler's upstream image at
	// the cluster's version, which the chart runs by default: the same
	// binary the control plane runs (built with cgo, so on the glibc base),
	// on its PATH as upstream has it.
	SchedulerImage = "registry.k8s.io/kube-scheduler:" + KubernetesVersion
)

// buildImages writes the images real nodes import into dir/images.tar.
func buildImages(b Binaries, dir string) (string, error) {
	docker := filepath.Join(filepath.Dir(moduleDir()), "deploy", "docker")
	var imgs []images.Image
	for _, d := range []struct{ file, ref, out, bin string }{
		{"extender.Dockerfile", ExtenderImage, "/out/gpupack-extender", b.Extender},
		{"device-plugin.Dockerfile", DevicePluginImage, "/out/gpupack-device-plugin", b.DevicePlugin},
		{"train.Dockerfile", TrainImage, "/out/gpupack-train", b.Train},
	} {
		img, err := images.FromDockerfile(filepath.Join(docker, d.file), d.ref, map[string]string{d.out: d.bin})
		if err != nil {
			return "", fmt.Errorf("image %s: %w", d.ref, err)
		}
		imgs = append(imgs, img)
	}
	imgs = append(imgs,
		images.Image{Ref: SchedulerImage, Base: images.BaseGlibc, Files: []images.File{{Path: "/usr/local/bin/kube-scheduler", Source: b.Scheduler}}},
		images.Image{Ref: pauseImage, Base: images.BaseStatic, Files: []images.File{{Path: "/pause", Source: b.Pause}}, Entrypoint: []string{"/pause"}, User: "65535:65535"},
	)
	path := filepath.Join(dir, "images.tar")
	if err := images.Write(path, imgs...); err != nil {
		return "", fmt.Errorf("writing the images: %w", err)
	}
	return path, nil
}
