package procstat

import (
	"os"
	"testing"
	"time"
)

func TestParseCPU(t *testing.T) {
	stat := "1234 (chatty d) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000 200"
	cpu, err := ParseCPU([]byte(stat))
	if err != nil || cpu != 3*time.Second {
		t.Fatalf("ParseCPU = %v, %v; want 3s (300 ticks)", cpu, err)
	}
	for _, bad := range []string{"1234 (x", "1234 (x) S 1 2", "1234 (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 ab 50"} {
		if _, err := ParseCPU([]byte(bad)); err == nil {
			t.Errorf("ParseCPU accepted %q", bad)
		}
	}
}

// This process has run the test so far: some CPU time, and no error.
func TestCPUOfSelf(t *testing.T) {
	if _, err := CPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, err := CPU(-1); err == nil {
		t.Error("CPU of pid -1 gave no error")
	}
}
