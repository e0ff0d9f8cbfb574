// Command cudajob holds a container's share of GPU memory on a real card,
// through the CUDA driver API: libcuda.so.1 ships with the NVIDIA driver, so
// no CUDA toolkit is needed to build or run it (it is opened at run time).
//
// It reads what the device plugin's Allocate gave the container
// (NVIDIA_VISIBLE_DEVICES and GPUPACK_MEMORY_LIMIT_MIB, as gpupack-train
// does), makes the first of those cards CUDA's only visible device, takes
// --use of its share in device memory and writes it over and over (so the
// card's memory controller is busy), and, with --exceed above 1, grows to
// that fraction of its share after --exceed-after, as a job that ignores its
// limit does. It prints one line per change of what it holds, frees
// everything and exits 0 after --hold or on SIGINT/SIGTERM.
//
// Build it with cgo: go build ./cmd/cudajob.
package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef unsigned long long CUdeviceptr;

static CUresult (*cuInit_)(unsigned int);
static CUresult (*cuDeviceGet_)(CUdevice *, int);
static CUresult (*cuDeviceGetName_)(char *, int, CUdevice);
static CUresult (*cuDevicePrimaryCtxRetain_)(CUcontext *, CUdevice);
static CUresult (*cuCtxSetCurrent_)(CUcontext);
static CUresult (*cuMemAlloc_)(CUdeviceptr *, size_t);
static CUresult (*cuMemFree_)(CUdeviceptr);
static CUresult (*cuMemsetD8_)(CUdeviceptr, unsigned char, size_t);
static CUresult (*cuCtxSynchronize_)(void);
static CUresult (*cuGetErrorString_)(CUresult, const char **);

// load opens the driver library; it returns NULL, or what failed.
static const char *load(void) {
	void *h = dlopen("libcuda.so.1", RTLD_NOW);
	if (!h) return dlerror();
#define SYM(v, name) if (!(*(void **)(&v) = dlsym(h, name))) return name;
	SYM(cuInit_, "cuInit")
	SYM(cuDeviceGet_, "cuDeviceGet")
	SYM(cuDeviceGetName_, "cuDeviceGetName")
	SYM(cuDevicePrimaryCtxRetain_, "cuDevicePrimaryCtxRetain")
	SYM(cuCtxSetCurrent_, "cuCtxSetCurrent")
	SYM(cuMemAlloc_, "cuMemAlloc_v2")
	SYM(cuMemFree_, "cuMemFree_v2")
	SYM(cuMemsetD8_, "cuMemsetD8_v2")
	SYM(cuCtxSynchronize_, "cuCtxSynchronize")
	SYM(cuGetErrorString_, "cuGetErrorString")
#undef SYM
	return NULL;
}

static CUresult cu_init(void) { return cuInit_(0); }
static CUresult cu_device(CUdevice *d) { return cuDeviceGet_(d, 0); }
static CUresult cu_name(char *b, int n, CUdevice d) { return cuDeviceGetName_(b, n, d); }
static CUresult cu_context(CUdevice d) {
	CUcontext c;
	CUresult r = cuDevicePrimaryCtxRetain_(&c, d);
	if (r) return r;
	return cuCtxSetCurrent_(c);
}
static CUresult cu_alloc(CUdeviceptr *p, size_t n) { return cuMemAlloc_(p, n); }
static CUresult cu_free(CUdeviceptr p) { return cuMemFree_(p); }
static CUresult cu_touch(CUdeviceptr p, unsigned char v, size_t n) { return cuMemsetD8_(p, v, n); }
static CUresult cu_sync(void) { return cuCtxSynchronize_(); }
static const char *cu_error(CUresult r) {
	const char *s = NULL;
	if (cuGetErrorString_(r, &s) || !s) return "unknown CUDA error";
	return s;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gpupack/gpupack/mock/job"
)

// chunkMiB is the size of one allocation: what the job holds grows and is
// written in these.
const chunkMiB = 256

func check(what string, r C.CUresult) error {
	if r != 0 {
		return fmt.Errorf("%s: CUDA error %d (%s)", what, int(r), C.GoString(C.cu_error(r)))
	}
	return nil
}

func main() {
	var use, exceed float64
	var hold, exceedAfter, every time.Duration
	cmd := &cobra.Command{
		Use:          "cudajob",
		Short:        "hold a container's GPU memory share on a real card",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if use <= 0 || use > 1 {
				return fmt.Errorf("--use %v: want a fraction of the share in (0, 1]", use)
			}
			if exceed != 0 && exceed <= 1 {
				return fmt.Errorf("--exceed %v: want 0 (never) or a fraction of the share above 1", exceed)
			}
			env, err := job.ReadEnv(os.Getenv)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, env, use, exceed, hold, exceedAfter, every)
		},
	}
	f := cmd.Flags()
	f.Float64Var(&use, "use", 0.9, "fraction of the share held")
	f.Float64Var(&exceed, "exceed", 0, "fraction of the share held after --exceed-after, when above 1")
	f.DurationVar(&exceedAfter, "exceed-after", 10*time.Second, "when to grow to --exceed")
	f.DurationVar(&hold, "hold", time.Minute, "how long to hold the memory")
	f.DurationVar(&every, "every", 100*time.Millisecond, "how often all the memory held is written")
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}

// run holds the memory on the environment's first card until hold passes
// or ctx ends. CUDA's context is the calling thread's, so every call is
// made from this one, locked.
func run(ctx context.Context, env job.Env, use, exceed float64, hold, exceedAfter, every time.Duration) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// CUDA numbers the cards it sees; the container was given cards by
	// UUID, which CUDA_VISIBLE_DEVICES accepts.
	if os.Getenv("CUDA_VISIBLE_DEVICES") == "" {
		if err := os.Setenv("CUDA_VISIBLE_DEVICES", env.UUIDs[0]); err != nil {
			return err
		}
	}
	if msg := C.load(); msg != nil {
		return fmt.Errorf("opening the CUDA driver (libcuda.so.1): %s", C.GoString(msg))
	}
	if err := check("cuInit", C.cu_init()); err != nil {
		return err
	}
	var dev C.CUdevice
	if err := check("cuDeviceGet "+os.Getenv("CUDA_VISIBLE_DEVICES"), C.cu_device(&dev)); err != nil {
		return err
	}
	name := make([]C.char, 128)
	if err := check("cuDeviceGetName", C.cu_name(&name[0], C.int(len(name)), dev)); err != nil {
		return err
	}
	if err := check("creating the context", C.cu_context(dev)); err != nil {
		return err
	}
	var held []C.CUdeviceptr
	defer func() {
		for _, p := range held {
			C.cu_free(p)
		}
		fmt.Printf("freed %d MiB\n", len(held)*chunkMiB)
	}()
	grow := func(mib int64) error {
		for int64(len(held)+1)*chunkMiB <= mib {
			var p C.CUdeviceptr
			if err := check(fmt.Sprintf("allocating %d MiB more than the %d MiB held", chunkMiB, len(held)*chunkMiB), C.cu_alloc(&p, chunkMiB<<20)); err != nil {
				return err
			}
			held = append(held, p)
		}
		return nil
	}
	touch := func(v byte) error {
		for _, p := range held {
			if err := check("writing", C.cu_touch(p, C.uchar(v), chunkMiB<<20)); err != nil {
				return err
			}
		}
		return check("synchronizing", C.cu_sync())
	}

	target := int64(use * float64(env.LimitMiB))
	if err := grow(target); err != nil {
		return err
	}
	card := strings.TrimRight(C.GoString(&name[0]), "\x00")
	fmt.Printf("holding %d MiB of a %d MiB share on %s (%s), pid %d\n", len(held)*chunkMiB, env.LimitMiB, env.UUIDs[0], card, os.Getpid())
	end := time.After(hold)
	var over <-chan time.Time
	if exceed > 0 {
		over = time.After(exceedAfter)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-end:
			return nil
		case <-over:
			over = nil
			if err := grow(int64(exceed * float64(env.LimitMiB))); err != nil {
				return err
			}
			fmt.Printf("holding %d MiB of a %d MiB share on %s: over it\n", len(held)*chunkMiB, env.LimitMiB, env.UUIDs[0])
		case <-tick.C:
			if err := touch(byte(i)); err != nil {
				return errors.Join(err, ctx.Err())
			}
		}
	}
}
