// Types for the parts of parse-prometheus-text-format (no bundled types, no @types package)
// that the tests use: the default export parses the Prometheus text format into metric
// families. Every number stays a string, as in the text.
declare module 'parse-prometheus-text-format' {
  export interface PrometheusMetric {
    labels?: Record<string, string>
    /** Counter, gauge, untyped. */
    value?: string
    /** Histogram: upper bound ("+Inf" included) to cumulative count. */
    buckets?: Record<string, string>
    /** Summary: quantile to value. */
    quantiles?: Record<string, string>
    /** Histogram and summary. */
    count?: string
    sum?: string
  }
  export interface PrometheusFamily {
    name: string
    help: string
    type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED'
    metrics: PrometheusMetric[]
  }
  export default function parsePrometheusTextFormat(text: string): PrometheusFamily[]
}
