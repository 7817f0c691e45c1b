//! What `/metrics` says: the live counters (each named once, in
//! [`Counter::describe`]), the workers' latency histogram and the latest
//! report's figures, encoded by `prometheus-client` and given in
//! Prometheus's classic text format. Names follow the Prometheus
//! conventions (`_total` counters, base units, `vmstats_` prefix).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::report::{self, Category};
use crate::stats::{Counter, LATENCY_BOUNDS_MS, LatencySnapshot, Series, Stats};
use crate::wire::Reject;

/// What the endpoint shows: the live counters, the latest report's
/// figures, and how many workers there are.
#[derive(Debug)]
pub struct Source {
    pub stats: Arc<Stats>,
    pub published: report::Published,
}

impl Collector for Source {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.stats.snapshot();
        let mut dropped = Vec::new();
        for c in Counter::ALL {
            match c.describe().series {
                Series::Own {
                    name,
                    help,
                    gauge: false,
                } => counter(&mut enc, name, help, s[c])?,
                Series::Own {
                    name,
                    help,
                    gauge: true,
                } => gauge(&mut enc, name, help, s[c])?,
                Series::Dropped { cause } => dropped.push((cause, s[c])),
                Series::PerWorker => {}
            }
        }
        let rejected: Vec<(&str, u64)> = Reject::ALL
            .iter()
            .map(|r| (r.name(), s.rejected[r.index()]))
            .collect();
        family(
            &mut enc,
            MetricType::Counter,
            (
                "vmstats_datagrams_rejected",
                "Datagrams refused, by reason.",
                "reason",
            ),
            &rejected,
        )?;
        family(
            &mut enc,
            MetricType::Counter,
            (
                "vmstats_datagrams_dropped",
                "Valid datagrams (or their rows) lost, by cause.",
                "cause",
            ),
            &dropped,
        )?;
        family(
            &mut enc,
            MetricType::Counter,
            (
                "vmstats_receiver_datagrams",
                "Datagrams taken off the socket, per receive loop (--receivers).",
                "receiver",
            ),
            &by_index(&self.stats.receiver_received),
        )?;
        family(
            &mut enc,
            MetricType::Gauge,
            (
                "vmstats_worker_queue_batches",
                "Batches waiting in each worker's queue.",
                "worker",
            ),
            &by_index(&self.stats.worker_queues),
        )?;
        for (name, help, latencies) in [
            (
                "vmstats_receive_to_disk_seconds",
                "Time from receiving a datagram to its row being durable (the journal synced; written, with --no-sync).",
                &self.stats.latency,
            ),
            (
                "vmstats_receive_to_file_seconds",
                "Time from receiving a datagram to its row being written to its VM's file.",
                &self.stats.file_latency,
            ),
        ] {
            let latency = LatencyHistogram(latencies.snapshot());
            let m = enc.encode_descriptor(name, help, None, latency.metric_type())?;
            latency.encode(m)?;
        }
        if let Some(f) = *self.published.lock().expect("no panic holds it") {
            report_figures(&mut enc, &f)?;
        }
        let info = ConstGauge::new(1i64);
        let mut m = enc.encode_descriptor(
            "vmstats_build_info",
            "The running version, as a label.",
            None,
            info.metric_type(),
        )?;
        info.encode(m.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)
    }
}

/// The latest report's figures: VMs per category and the fleet's
/// sequence totals over its window.
fn report_figures(enc: &mut DescriptorEncoder, f: &report::Figures) -> Result<(), std::fmt::Error> {
    let by_category: Vec<(String, u64)> = Category::ALL
        .iter()
        .zip(f.vms)
        .map(|(c, n)| (c.name().to_ascii_lowercase(), n))
        .collect();
    family(
        enc,
        MetricType::Gauge,
        (
            "vmstats_report_vms",
            "VMs per category in the latest report.",
            "category",
        ),
        &by_category,
    )?;
    let t = &f.totals;
    for (name, help, v) in [
        (
            "vmstats_report_datagrams_lost",
            "Datagrams missing from VMs' sequences in the latest report's window.",
            t.lost,
        ),
        (
            "vmstats_report_datagrams_duplicated",
            "Datagrams received twice in the latest report's window.",
            t.duplicates,
        ),
        (
            "vmstats_report_vm_restarts",
            "Agent restarts (new boot ids) in the latest report's window.",
            t.restarts,
        ),
        (
            "vmstats_report_seq_jumps",
            "Sequence jumps too large to be loss in the latest report's window.",
            t.seq_jumps,
        ),
    ] {
        gauge(enc, name, help, v)?;
    }
    let m = enc.encode_descriptor(
        "vmstats_report_timestamp_seconds",
        "When the latest report's window ended.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(f.as_of_ms as f64 / 1000.0).encode(m)
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v as i64);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Each counter's index (a worker's, a receiver's) as a label value.
fn by_index(counters: &[AtomicU64]) -> Vec<(String, u64)> {
    let values = counters.iter().map(|c| c.load(Relaxed));
    values
        .enumerate()
        .map(|(i, v)| (i.to_string(), v))
        .collect()
}

/// A counter or gauge family with one label, a sample per value.
fn family<S: AsRef<str>>(
    enc: &mut DescriptorEncoder,
    kind: MetricType,
    (name, help, label): (&str, &str, &str),
    values: &[(S, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (value, v) in values {
        let labels = [(label, value.as_ref())];
        let sample = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v).encode(sample)?,
            _ => ConstGauge::new(*v as i64).encode(sample)?,
        }
    }
    Ok(())
}

/// A latency's buckets as a Prometheus histogram (seconds).
#[derive(Debug)]
struct LatencyHistogram(LatencySnapshot);

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per-bucket counts (the encoder sums them up); f64::MAX is how the
        // crate spells the +Inf bucket.
        let bounds = LATENCY_BOUNDS_MS.iter().map(|ms| *ms as f64 / 1000.0);
        let buckets: Vec<(f64, u64)> = bounds.chain([f64::MAX]).zip(self.0.counts).collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum_ms as f64 / 1000.0,
            self.0.count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The text of `/metrics`, in Prometheus's classic text format.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    classic(&text)
}

/// OpenMetrics text (what prometheus-client writes) as Prometheus's classic
/// text format (version 0.0.4), which every Prometheus reads and which
/// `promtool check metrics` lints: a counter's HELP and TYPE lines name it
/// by its sample name (`x_total`, not the family `x`), and there is no
/// `# EOF`. Nothing else differs for the types used here.
fn classic(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 16 * counters.len());
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then_some((p, name, tail))
        });
        match meta {
            Some((p, name, tail)) => {
                let _ = writeln!(out, "{p}{name}_total {tail}");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub fn registry() -> (Registry, Arc<Stats>) {
        let stats = Arc::new(Stats::new(2, 1));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Source {
            stats: Arc::clone(&stats),
            published: report::Published::default(),
        }));
        (registry, stats)
    }

    #[test]
    fn the_text_names_every_counter_with_its_value() {
        let (registry, stats) = registry();
        stats.set(Counter::Received, 7);
        stats.rejected[Reject::BadMagic.index()].store(2, Relaxed);
        stats.set(Counter::KernelDrops, 3);
        stats.worker_queues[1].store(4, Relaxed);
        stats.latency.observe(7, 10);
        stats.latency.observe(700, 1);
        stats.file_latency.observe(30_000, 11);
        let text = render(&registry);
        for line in [
            "vmstats_datagrams_received_total 7",
            "vmstats_datagrams_rejected_total{reason=\"bad_magic\"} 2",
            "vmstats_datagrams_dropped_total{cause=\"kernel\"} 3",
            "vmstats_worker_queue_batches{worker=\"1\"} 4",
            "vmstats_receive_to_disk_seconds_bucket{le=\"0.01\"} 10",
            "vmstats_receive_to_disk_seconds_bucket{le=\"1.0\"} 11",
            "vmstats_receive_to_disk_seconds_bucket{le=\"+Inf\"} 11",
            "vmstats_receive_to_disk_seconds_count 11",
            "vmstats_receive_to_file_seconds_bucket{le=\"25.0\"} 0",
            "vmstats_receive_to_file_seconds_bucket{le=\"60.0\"} 11",
            "vmstats_journal_bytes 0",
            "vmstats_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("vmstats_report_vms"), "no report yet");
    }

    #[test]
    fn counters_are_named_by_their_samples_in_the_classic_format() {
        let open = "# HELP a_b Help.\n# TYPE a_b counter\na_b_total 1\n# HELP g G.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            classic(open),
            "# HELP a_b_total Help.\n# TYPE a_b_total counter\na_b_total 1\n# HELP g G.\n# TYPE g gauge\ng 2\n"
        );
    }

    #[test]
    fn every_counter_is_on_the_page_once() {
        let (registry, _) = registry();
        let text = render(&registry);
        for c in Counter::ALL {
            match c.describe().series {
                Series::Own { name, gauge, .. } => {
                    let sample = if gauge {
                        format!("\n{name} ")
                    } else {
                        format!("\n{name}_total ")
                    };
                    assert_eq!(
                        text.matches(&sample).count(),
                        1,
                        "{c:?}: {sample:?} in\n{text}"
                    );
                }
                Series::Dropped { cause } => {
                    let sample = format!("vmstats_datagrams_dropped_total{{cause=\"{cause}\"}} ");
                    assert_eq!(text.matches(&sample).count(), 1, "{c:?}");
                }
                Series::PerWorker => {
                    assert!(text.contains("vmstats_worker_queue_batches{worker=\"1\"}"));
                }
            }
        }
    }
}
