package controlserver_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatty-dev/chatty/internal/controlserver"

	"github.com/chatty-dev/chatty/internal/controlserver/controltest"
	"github.com/chatty-dev/chatty/pkg/control"
	"github.com/chatty-dev/chatty/pkg/control/client"
)

func TestMetrics(t *testing.T) {
	srv := controltest.Serve(t, newFake(), controlserver.Options{})
	body, err := client.New(srv.Addr()).Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	text := string(body)
	for _, want := range []string{
		`chatty_build_info{version="1.2.3"} 1`,
		"chatty_uptime_seconds 3600",
		"# TYPE chatty_feed_lines_total counter",
		"chatty_feed_lines_total 42",
		"chatty_feed_bytes_total 2048",
		"chatty_feed_dropped_lines_total 3",
		"chatty_feed_undelivered_lines_total 5",
		"# TYPE chatty_clients_connected gauge",
		"chatty_clients_connected 2",
		"# TYPE chatty_listener_clients gauge",
		`chatty_listener_clients{listener="broadcast"} 2`,
		"chatty_clients_accepted_total 7",
		"chatty_clients_refused_total 1",
		"# TYPE chatty_clients_authenticating gauge",
		"chatty_clients_authenticating 1",
		"chatty_clients_unauthenticated_refused_total 8",
		"chatty_clients_slow_consumers_total 4",
		"chatty_clients_idle_closed_total 6",
		"chatty_acks_good_total 40",
		"chatty_acks_mismatched_total 2",
		"chatty_keepalives_answered_total 11",
		"chatty_clients_rejected_frames_total 0",
		"chatty_clients_tls_failed_total 0",
		"chatty_clients_auth_failed_total 0",
		"chatty_clients_rate_limited_messages_total 0",
		"chatty_clients_unknown_lines_total 13",
		"chatty_pool_workers_desired 4",
		"chatty_pool_workers_running 1",
		"chatty_pool_restarts_total 9",
		"chatty_pool_replay_identified_total 21",
		"chatty_pool_replay_resumed_total 20",
		"chatty_pool_replay_gaps_total 2",
		"chatty_pool_replay_gap_lines_total 300",
		"chatty_pool_replay_duplicate_lines_total 17",
		"go_goroutines ",
	} {
		if !strings.Contains(text, want+"\n") && !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// Metric reads one unlabelled sample, and says so when there is none.
func TestMetric(t *testing.T) {
	srv := controltest.Serve(t, newFake(), controlserver.Options{})
	c := client.New(srv.Addr())
	if v, err := c.Metric(t.Context(), "chatty_clients_accepted_total"); err != nil || v != 7 {
		t.Errorf("chatty_clients_accepted_total = %v, %v; want 7", v, err)
	}
	if v, err := c.Metric(t.Context(), "go_goroutines"); err != nil || v < 1 {
		t.Errorf("go_goroutines = %v, %v", v, err)
	}
	// A prefix of a name is not the name.
	if _, err := c.Metric(t.Context(), "chatty_clients_accepted"); err == nil || !strings.Contains(err.Error(), "no chatty_clients_accepted in /metrics") {
		t.Errorf("a missing metric: %v", err)
	}
}

// TestCurl checks the API with a client that is not ours.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not on PATH")
	}
	srv := controltest.Serve(t, newFake(), controlserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bodyFile := filepath.Join(controltest.SocketDir(t), "body")
	out, err := exec.CommandContext(ctx, curl, "-sS", "-o", bodyFile, "-w", "%{http_code}",
		"--unix-socket", srv.Addr(), "http://chattyd/v1/status").Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	if code := string(out); code != "200" {
		t.Fatalf("curl got code %q", code)
	}
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		t.Fatal(err)
	}
	var st control.Status
	if err := json.Unmarshal(body, &st); err != nil || st.Version != "1.2.3" {
		t.Fatalf("curl body is not the status: %v\n%s", err, body)
	}
}

// With a shared feed the chatty_nats_* metrics are there; without, none.
func TestMetricsNATS(t *testing.T) {
	b := newFake()
	srv := controltest.Serve(t, b, controlserver.Options{})
	body, err := client.New(srv.Addr()).Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(body), "chatty_nats_") {
		t.Errorf("/metrics has chatty_nats_* without a shared feed")
	}
	st := fixedStatus()
	st.NATS = &control.NATSStatus{State: "connected", Stream: "CHATTY", Reconnects: 3, Elections: 4,
		Publish: control.NATSPublishStatus{Window: 64, Pending: 5, Lines: 100, LastSeq: 120, HeldBack: 2},
		Consume: control.NATSConsumeStatus{StreamSeq: 9, Lines: 120, Gaps: 1, GapLines: 7}}
	b.StatusValue = st
	body, err = client.New(srv.Addr()).Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`chatty_nats_connected{stream="CHATTY"} 1`,
		"chatty_nats_reconnects_total 3",
		"chatty_nats_stream_elections_total 4",
		"chatty_nats_publish_window 64",
		"chatty_nats_publish_pending_acks 5",
		"chatty_nats_published_lines_total 100",
		"chatty_nats_published_last_seq 120",
		"chatty_nats_publish_held_back_total 2",
		"chatty_nats_consumed_stream_seq 9",
		"chatty_nats_gaps_total 1",
		"chatty_nats_gap_lines_total 7",
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(string(body), "chatty_nats_work_queue_") {
		t.Errorf("/metrics has chatty_nats_work_queue_* without a work queue across machines")
	}
	st.NATS.WorkQueue = &control.NATSWorkQueueStatus{Messages: 50, Redelivered: 4, Held: 3, Acked: 46, AckFailures: 1, Terminated: 2}
	body, err = client.New(srv.Addr()).Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"chatty_nats_work_queue_pulled_lines_total 50",
		"chatty_nats_work_queue_redelivered_lines_total 4",
		"chatty_nats_work_queue_held_lines 3",
		"chatty_nats_work_queue_acked_lines_total 46",
		"chatty_nats_work_queue_ack_failures_total 1",
		"chatty_nats_work_queue_terminated_lines_total 2",
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
