package main

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// machineCPU is the machine's busy CPU time (all cores, every process:
// relays, PostgreSQL, this program) from /proc/stat. The difference of two
// readings divided by the records moved is the CPU a record cost, which
// varies much less on a shared machine than a rate does.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuPerRecordUS is the machine CPU time per record in microseconds.
func cpuPerRecordUS(busy time.Duration, records int) float64 {
	if records == 0 || busy <= 0 {
		return 0
	}
	return float64(busy.Microseconds()) / float64(records)
}
