// CPU and memory figures read from /proc (Linux only).

import fs from 'node:fs';
import { execFileSync } from 'node:child_process';

export const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** Fields of /proc/PID/stat after the command name, indexed by their man-page number. */
function statFields(pid) {
  let text;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state).
  return (n) => Number(rest[n - 3]);
}

/** utime+stime of one process (all its threads), in seconds; `children` adds reaped children. */
export function cpuSeconds(pid, { children = false } = {}) {
  const f = statFields(pid);
  if (!f) return null;
  let ticks = f(14) + f(15);
  if (children) ticks += f(16) + f(17);
  return ticks / CLK_TCK;
}

/** {user, system} seconds of one process (all its threads). */
export function cpuSplit(pid) {
  const f = statFields(pid);
  if (!f) return null;
  return { user: f(14) / CLK_TCK, system: f(15) / CLK_TCK };
}

function ppidOf(pid) {
  const f = statFields(pid);
  return f ? f(4) : null;
}

/** Pids whose parent is `parent`. */
export function childrenOf(parent) {
  const out = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    if (ppidOf(name) === parent) out.push(Number(name));
  }
  return out;
}

/**
 * CPU of a whole PostgreSQL cluster: the postmaster, every live child
 * (backends, walwriter, checkpointer, ...) and, through the postmaster's
 * cutime/cstime, every child that has exited since it started (pgbench's
 * 64 backends end with pgbench). Monotonic, so before/after differences are
 * exact to a clock tick.
 */
export function clusterCpuSeconds(postmasterPid) {
  let total = cpuSeconds(postmasterPid, { children: true }) ?? 0;
  for (const child of childrenOf(postmasterPid)) total += cpuSeconds(child) ?? 0;
  return total;
}

/** Machine-wide busy and total CPU seconds from /proc/stat (all cores). */
export function machineCpu() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice
  const idle = v[3] + v[4];
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: (total - idle) / CLK_TCK, total: total / CLK_TCK, irq: (v[5] + v[6]) / CLK_TCK, steal: v[7] / CLK_TCK };
}

/** VmHWM / VmRSS of a process, in KiB. */
export function memoryKiB(pid) {
  let text;
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const get = (k) => Number((text.match(new RegExp(`^${k}:\\s+(\\d+)`, 'm')) || [])[1]);
  return { hwm: get('VmHWM'), rss: get('VmRSS'), threads: get('Threads') };
}

/** Resets VmHWM to the current RSS (Linux >= 4.0; needs to own the process or be root). */
export function resetPeakRss(pid) {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export function cpuModel() {
  const text = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = (text.match(/^model name\s*:\s*(.*)$/m) || [])[1] || 'unknown';
  const cores = (text.match(/^processor\s*:/gm) || []).length;
  return { model: model.trim(), cores };
}
