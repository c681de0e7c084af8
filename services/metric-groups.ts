/**
 * Every metric group Drover defines, for the generic helpers of lib/metrics.ts (`fullRegistry`,
 * `exportedMetricNames`, `metricTable`): docs, tests and the dashboard checks see them all.
 */
import type { MetricGroup } from '../lib/metrics';
import { AgentMetrics } from './node-agent/agent-metrics';
import { MigratorMetrics } from './migrator/migrator-metrics';
import { SchedulerMetrics } from './scheduler/scheduler-metrics';
import { ControlPlaneMetrics } from '../cluster/control-metrics';

/** The node agent's, the migrator's, the scheduler's and the control plane's metrics. */
export const METRIC_GROUPS: readonly MetricGroup[] = [AgentMetrics, MigratorMetrics, SchedulerMetrics, ControlPlaneMetrics];
