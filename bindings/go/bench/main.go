// Command bench measures the Go binding (scenario H6 of BENCHMARKS.md) against
// references run in the same process: for each scenario a warm-up pair, then
// interleaved (candidate, reference) pairs whose order alternates; stdout gets one
// line per scenario,
//
//	bench <scenario> <events_per_s> ratio=<median ratio> goal=<goal ratio>
//
// with the candidate's median rate and the median of the per-pair ratios; progress
// goes to stderr. When BENCH_RESULTS_DIR is set (`make bench` sets it), the results
// and their references' medians also go to $BENCH_RESULTS_DIR/go.jsonl for the report
// (benches/report.py). BENCH_QUICK=1 is the same as -quick. -trace DIR writes a
// runtime/trace of every candidate run into DIR (`go tool trace` shows how long each
// goroutine waited for a P, ran, and spent in C).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/trace"
	"slices"
	"strings"
	"time"
)

type scenario struct {
	name          string
	goal          float64
	candidate     func(n int) (time.Duration, error)
	reference     func(n int) (time.Duration, error)
	referenceName string
}

const (
	channelReference  = "Go chan []byte (1024), one consumer goroutine batching up to 1024, same client"
	goEventsReference = "go-events Queue + RetryingSink (breaker), same client"
)

var scenarios = []scenario{
	{
		name:          "h6-go-event",
		goal:          1,
		candidate:     func(n int) (time.Duration, error) { return runConveyor(n, perEvent) },
		reference:     runChannel,
		referenceName: channelReference,
	},
	{
		name:          "h6-go-batch",
		goal:          3,
		candidate:     func(n int) (time.Duration, error) { return runConveyor(n, batched) },
		reference:     runChannel,
		referenceName: channelReference + ", fed per event",
	},
	{
		name:          "h6-go-packed",
		goal:          3,
		candidate:     func(n int) (time.Duration, error) { return runConveyor(n, packed) },
		reference:     runChannel,
		referenceName: channelReference + ", fed per event",
	},
	{
		name:          "h6-go-vs-goevents",
		goal:          3,
		candidate:     func(n int) (time.Duration, error) { return runConveyor(n, perEvent) },
		reference:     runGoEvents,
		referenceName: goEventsReference,
	},
}

// traceDir, when set (-trace), gets a runtime/trace of every candidate run, named
// after the scenario, the run and its rate.
var traceDir string

func rate(n int, run func(int) (time.Duration, error)) (float64, error) {
	d, err := run(n)
	if err != nil {
		return 0, err
	}
	return float64(n) / d.Seconds(), nil
}

// candidateRate is rate for a candidate run, traced when traceDir is set.
func candidateRate(sc scenario, n int) (float64, error) {
	if traceDir == "" {
		return rate(n, sc.candidate)
	}
	f, err := os.CreateTemp(traceDir, sc.name+"-*.trace")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := trace.Start(f); err != nil {
		return 0, err
	}
	r, err := rate(n, sc.candidate)
	trace.Stop()
	if err != nil {
		return 0, err
	}
	named := strings.TrimSuffix(f.Name(), ".trace") + fmt.Sprintf("-%.1fM.trace", r/1e6)
	return r, os.Rename(f.Name(), named)
}

func median(values []float64) float64 {
	s := slices.Clone(values)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func millions(r float64) string { return fmt.Sprintf("%.2f M/s", r/1e6) }

// result is one line of go.jsonl (format: benches/report.py).
type result struct {
	Scenario            string  `json:"scenario"`
	EventsPerS          float64 `json:"events_per_s"`
	Reference           string  `json:"reference"`
	ReferenceEventsPerS float64 `json:"reference_events_per_s"`
	Ratio               float64 `json:"ratio"`
	RatioMin            float64 `json:"ratio_min"`
	RatioMax            float64 `json:"ratio_max"`
	Goal                float64 `json:"goal"`
	Pairs               int     `json:"pairs"`
	EventsPerRun        int     `json:"events_per_run"`
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func measure(sc scenario, n, pairs int) (result, error) {
	fmt.Fprintf(os.Stderr, "%s: warm-up\n", sc.name)
	if _, err := candidateRate(sc, n); err != nil {
		return result{}, err
	}
	if _, err := rate(n, sc.reference); err != nil {
		return result{}, err
	}
	var rates, references, ratios []float64
	for pair := range pairs {
		var c, r float64
		var err error
		if pair%2 == 0 {
			if c, err = candidateRate(sc, n); err == nil {
				r, err = rate(n, sc.reference)
			}
		} else {
			if r, err = rate(n, sc.reference); err == nil {
				c, err = candidateRate(sc, n)
			}
		}
		if err != nil {
			return result{}, err
		}
		fmt.Fprintf(os.Stderr, "%s: pair %d/%d  %s vs reference %s  ratio %.3f\n",
			sc.name, pair+1, pairs, millions(c), millions(r), c/r)
		rates, references, ratios = append(rates, c), append(references, r), append(ratios, c/r)
	}
	r := result{
		Scenario: sc.name, EventsPerS: math.Round(median(rates)), Reference: sc.referenceName,
		ReferenceEventsPerS: math.Round(median(references)), Ratio: round3(median(ratios)),
		RatioMin: round3(slices.Min(ratios)), RatioMax: round3(slices.Max(ratios)), Goal: sc.goal,
		Pairs: pairs, EventsPerRun: n,
	}
	fmt.Fprintf(os.Stderr, "%s: median %s vs reference %s (%s); ratios %.3f .. %.3f\n", sc.name,
		millions(r.EventsPerS), millions(r.ReferenceEventsPerS), sc.referenceName, r.RatioMin, r.RatioMax)
	fmt.Printf("bench %s %.0f ratio=%.3f goal=%g\n", sc.name, r.EventsPerS, median(ratios), sc.goal)
	return r, nil
}

// openResults empties and opens $BENCH_RESULTS_DIR/go.jsonl, or returns nil when the
// variable is not set.
func openResults() (*os.File, error) {
	dir := os.Getenv("BENCH_RESULTS_DIR")
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return os.Create(filepath.Join(dir, "go.jsonl"))
}

func main() {
	quick := flag.Bool("quick", false, "smoke run: 200,000 events per run and 3 pairs")
	events := flag.Int("events", 2_000_000, "events per run (at least 1,000,000 for a measurement)")
	pairs := flag.Int("pairs", 7, "interleaved (candidate, reference) pairs per scenario")
	only := flag.String("only", "", "run only the scenarios whose name contains this")
	flag.StringVar(&traceDir, "trace", "", "write a runtime/trace of each candidate run into this directory")
	flag.Parse()
	if v := os.Getenv("BENCH_QUICK"); *quick || (v != "" && v != "0") {
		*events, *pairs = 200_000, 3
	}
	out, err := openResults()
	if err != nil {
		fmt.Fprintln(os.Stderr, "results:", err)
		os.Exit(1)
	}
	var records *json.Encoder
	if out != nil {
		defer out.Close()
		records = json.NewEncoder(out)
	}
	for _, sc := range scenarios {
		if !strings.Contains(sc.name, *only) {
			continue
		}
		r, err := measure(sc, *events, *pairs)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", sc.name, err)
			os.Exit(1)
		}
		if records != nil {
			if err := records.Encode(r); err != nil {
				fmt.Fprintln(os.Stderr, "results:", err)
				os.Exit(1)
			}
		}
	}
}
