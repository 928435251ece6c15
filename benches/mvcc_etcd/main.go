// The etcd side of keelson's MVCC benchmark (benches/mvcc.rs): the same workload, run on etcd
// 3.4's own storage layer (package go.etcd.io/etcd/mvcc on its bbolt backend, in process, no
// network and no raft), printing one JSON object per figure on stdout.
//
// Built by the benchmark in GOPATH mode against Debian's golang-etcd-server-dev:
//   GO111MODULE=off GOPATH=/usr/share/gocode go build -o mvcc_etcd .
// Usage: mvcc_etcd DIR KEYS VALUE_SIZE PUTS RANGES
package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"go.uber.org/zap"

	"go.etcd.io/etcd/lease"
	"go.etcd.io/etcd/mvcc"
	"go.etcd.io/etcd/mvcc/backend"
	"go.etcd.io/etcd/pkg/traceutil"
)

// key is the workload's key number i: 100 keys per group, so a group is a 100-key prefix.
func key(i int) []byte {
	return []byte(fmt.Sprintf("/registry/g%05d/k%07d", i/100, i))
}

func groupPrefix(g int) ([]byte, []byte) {
	return []byte(fmt.Sprintf("/registry/g%05d/", g)), []byte(fmt.Sprintf("/registry/g%05d0", g))
}

type figure struct {
	Name  string  `json:"name"`
	Unit  string  `json:"unit"`
	Value float64 `json:"value"`
}

func emit(name, unit string, value float64) {
	b, _ := json.Marshal(figure{name, unit, value})
	fmt.Println(string(b))
}

// latencies prints the median and 99th percentile of samples, in microseconds.
func latencies(name string, samples []time.Duration) {
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
	emit(name+" p50", "us", us(samples[len(samples)/2]))
	emit(name+" p99", "us", us(samples[len(samples)*99/100]))
}

func arg(i int) int {
	n, err := strconv.Atoi(os.Args[i])
	if err != nil {
		panic(err)
	}
	return n
}

func main() {
	dir, keys, valueSize, puts, ranges := os.Args[1], arg(2), arg(3), arg(4), arg(5)
	cfg := backend.DefaultBackendConfig()
	cfg.Path = filepath.Join(dir, "etcd.db")
	be := backend.New(cfg)
	s := mvcc.NewStore(zap.NewNop(), be, &lease.FakeLessor{}, nil, mvcc.StoreConfig{})
	value := make([]byte, valueSize)
	rand.Read(value)

	start := time.Now()
	for i := 0; i < keys; i++ {
		// As etcd applies entries: one write transaction per put.
		txn := s.Write(traceutil.TODO())
		txn.Put(key(i), value, lease.NoLease)
		txn.End()
	}
	be.ForceCommit()
	emit("load", "puts/s", float64(keys)/time.Since(start).Seconds())

	start = time.Now()
	for n := 0; n < puts; n++ {
		txn := s.Write(traceutil.TODO())
		txn.Put(key(rand.Intn(keys)), value, lease.NoLease)
		txn.End()
	}
	be.ForceCommit()
	emit("apply", "puts/s", float64(puts)/time.Since(start).Seconds())

	read := func(name string, count bool, pick func() ([]byte, []byte)) {
		samples := make([]time.Duration, ranges)
		for n := range samples {
			k, end := pick()
			t := time.Now()
			txn := s.Read(traceutil.TODO())
			r, err := txn.Range(k, end, mvcc.RangeOptions{Count: count})
			txn.End()
			samples[n] = time.Since(t)
			if err != nil || (r.Count == 0) {
				panic(fmt.Sprintf("%s: %v (count %d)", name, err, r.Count))
			}
		}
		latencies(name, samples)
	}
	read("range one key", false, func() ([]byte, []byte) { return key(rand.Intn(keys)), nil })
	read("range 100-key prefix", false, func() ([]byte, []byte) { return groupPrefix(rand.Intn(keys / 100)) })
	read("count 100k keys", true, func() ([]byte, []byte) {
		g := rand.Intn(keys/100 - 1000 + 1)
		start, _ := groupPrefix(g)
		end, _ := groupPrefix(g + 1000)
		return start, end
	})
	s.Close()
	be.Close()
}
