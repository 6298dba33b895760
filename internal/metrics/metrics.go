// Package metrics serves the volume plugin's Prometheus metrics: each
// volume's state and copy, read from the driver when scraped, and the
// peer service's requests, counted as they are answered. Off unless the
// plugin's METRICS_ADDR is set.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cargo-migrate/cargo/internal/volstatus"
)

// Volumes is what the metrics read the volumes from: the driver's List,
// whose Status is what `docker volume inspect` shows.
type Volumes interface {
	List() (*volume.ListResponse, error)
}

// Metrics is the plugin's registry of metrics.
type Metrics struct {
	reg            *prometheus.Registry
	requests       *prometheus.CounterVec
	requestSeconds *prometheus.HistogramVec
}

// New registers the plugin's metrics, the volumes' read from vols at each
// scrape, with the Go runtime's and the process's.
func New(vols Volumes) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cargo_peer_requests_total",
			Help: "Requests the peer service answered, by route and HTTP status (4xx and 5xx are errors).",
		}, []string{"route", "code"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cargo_peer_request_duration_seconds",
			Help:    "How long the peer service took to answer, by route, to the end of the body.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
	}
	m.reg.MustRegister(m.requests, m.requestSeconds, &volumeCollector{vols: vols},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObservePeerRequest counts a request the peer service answered.
func (m *Metrics) ObservePeerRequest(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.requestSeconds.WithLabelValues(route).Observe(d.Seconds())
}

var (
	descState = prometheus.NewDesc("cargo_volume_state",
		"1 for each volume's state (local, exporting, copying, stalled, complete, failed).", []string{"volume", "state"}, nil)
	descFilesTotal  = prometheus.NewDesc("cargo_volume_files_total", "Files a federated volume copies from its source.", []string{"volume"}, nil)
	descFilesCopied = prometheus.NewDesc("cargo_volume_files_copied", "Files of a federated volume copied so far.", []string{"volume"}, nil)
	descBytesTotal  = prometheus.NewDesc("cargo_volume_bytes_total", "Bytes a federated volume copies from its source.", []string{"volume"}, nil)
	descBytesCopied = prometheus.NewDesc("cargo_volume_bytes_copied", "Bytes of a federated volume copied so far.", []string{"volume"}, nil)
	descRate        = prometheus.NewDesc("cargo_volume_copy_rate_bytes", "A federated volume's copy rate over the last seconds, in bytes per second.", []string{"volume"}, nil)
	descExports     = prometheus.NewDesc("cargo_exports_served", "Exports this host serves to targets now.", nil, nil)
	descVolumes     = prometheus.NewDesc("cargo_volumes", "Cargo volumes on this host, export volumes included.", nil, nil)
	descUp          = prometheus.NewDesc("cargo_volumes_listed", "1 if the volumes could be listed for this scrape.", nil, nil)
)

// volumeCollector reads the volumes at each scrape: their Status is
// computed on demand anyway, and nothing is kept between scrapes.
type volumeCollector struct{ vols Volumes }

func (c *volumeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descFilesTotal, descFilesCopied, descBytesTotal, descBytesCopied, descRate, descExports, descVolumes, descUp} {
		ch <- d
	}
}

func (c *volumeCollector) Collect(ch chan<- prometheus.Metric) {
	res, err := c.vols.List()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	exports := 0
	for _, v := range res.Volumes {
		st := volstatus.Parse(v.Status)
		if st.State != "" {
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, 1, v.Name, string(st.State))
		}
		if st.ExportID != "" && st.State == volstatus.StateExporting {
			exports++ // an export volume (of a volume or a checkpoint) whose export is served
		}
		if st.Source == "" {
			continue // not a federated volume: no copy
		}
		for _, g := range []struct {
			d *prometheus.Desc
			v int64
		}{{descFilesTotal, st.FilesTotal}, {descFilesCopied, st.FilesCopied}, {descBytesTotal, st.BytesTotal}, {descBytesCopied, st.BytesCopied}, {descRate, st.Rate}} {
			ch <- prometheus.MustNewConstMetric(g.d, prometheus.GaugeValue, float64(g.v), v.Name)
		}
	}
	ch <- prometheus.MustNewConstMetric(descExports, prometheus.GaugeValue, float64(exports))
	ch <- prometheus.MustNewConstMetric(descVolumes, prometheus.GaugeValue, float64(len(res.Volumes)))
}
