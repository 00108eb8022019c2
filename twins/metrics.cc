#include "twins/metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

namespace doppel {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  std::sort(bounds_.begin(), bounds_.end());
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::observe(double v) {
  const size_t i =
      static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  if (v > 0)
    sum_micros_.fetch_add(static_cast<uint64_t>(std::llround(v * 1e6)), std::memory_order_relaxed);
}

double Histogram::sum() const {
  return static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6;
}

double Histogram::quantile_bound(double q) const {
  const uint64_t total = count();
  if (total == 0) return 0;
  const auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total)));
  uint64_t seen = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    seen += bucket(i);
    if (seen >= rank) return bounds_[i];
  }
  return bounds_.empty() ? 0 : bounds_.back();
}

std::vector<double> stage_bounds() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0};
}

Counter& Metrics::counter(const std::string& name, const std::string& help,
                          const std::string& labels) {
  std::lock_guard lock(mu_);
  Counter& c = counters_.emplace_back();
  entries_.push_back({name, help, labels, Type::kCounter, &c, nullptr, nullptr, {}});
  return c;
}

Gauge& Metrics::gauge(const std::string& name, const std::string& help, const std::string& labels) {
  std::lock_guard lock(mu_);
  Gauge& g = gauges_.emplace_back();
  entries_.push_back({name, help, labels, Type::kGauge, nullptr, &g, nullptr, {}});
  return g;
}

Histogram& Metrics::histogram(const std::string& name, const std::string& help,
                              std::vector<double> bounds, const std::string& labels) {
  std::lock_guard lock(mu_);
  Histogram& h = histograms_.emplace_back(std::move(bounds));
  entries_.push_back({name, help, labels, Type::kHistogram, nullptr, nullptr, &h, {}});
  return h;
}

void Metrics::gauge_fn(const std::string& name, const std::string& help, std::function<double()> fn,
                       const std::string& labels) {
  std::lock_guard lock(mu_);
  entries_.push_back(
      {name, help, labels, Type::kGaugeFn, nullptr, nullptr, nullptr, std::move(fn)});
}

std::string Metrics::render() const {
  std::lock_guard lock(mu_);
  // Group by name, keeping first-registration order of names.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const Entry*>> families;
  for (const auto& e : entries_) {
    auto [it, inserted] = families.try_emplace(e.name);
    if (inserted) order.push_back(e.name);
    it->second.push_back(&e);
  }
  std::ostringstream out;
  out.precision(10);
  for (const auto& name : order) {
    const auto& fam = families[name];
    const Entry& first = *fam.front();
    const char* type = first.type == Type::kCounter     ? "counter"
                       : first.type == Type::kHistogram ? "histogram"
                                                        : "gauge";
    out << "# HELP " << name << ' ' << first.help << "\n# TYPE " << name << ' ' << type << '\n';
    for (const Entry* e : fam) {
      const std::string lbl = e->labels.empty() ? "" : "{" + e->labels + "}";
      switch (e->type) {
        case Type::kCounter:
          out << name << lbl << ' ' << e->counter->value() << '\n';
          break;
        case Type::kGauge:
          out << name << lbl << ' ' << e->gauge->value() << '\n';
          break;
        case Type::kGaugeFn:
          out << name << lbl << ' ' << e->fn() << '\n';
          break;
        case Type::kHistogram: {
          const Histogram& h = *e->histogram;
          const std::string with = e->labels.empty() ? "" : e->labels + ",";
          uint64_t cumulative = 0;
          for (size_t i = 0; i < h.bounds().size(); ++i) {
            cumulative += h.bucket(i);
            out << name << "_bucket{" << with << "le=\"" << h.bounds()[i] << "\"} " << cumulative
                << '\n';
          }
          cumulative += h.bucket(h.bounds().size());
          out << name << "_bucket{" << with << "le=\"+Inf\"} " << cumulative << '\n';
          out << name << "_sum" << lbl << ' ' << h.sum() << '\n';
          out << name << "_count" << lbl << ' ' << h.count() << '\n';
          break;
        }
      }
    }
  }
  return out.str();
}

}  // namespace doppel
