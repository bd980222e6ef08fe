//! How many runtime workers the sidecar starts: the CPUs the process may use (its affinity
//! and its cgroup's CPU quota, rounded up), at most `--workers`. A process that no quota
//! bounds (a pod without `resources.limits.cpu`, or a plain host) gets
//! [`UNBOUNDED_WORKERS`], never one worker per node CPU: a sidecar shares the node with its
//! app and every other pod. One worker means the current-thread scheduler.
//!
//! The parsers are pure; [`Budget::read`] is the only function that looks at the system
//! (`/proc/self/status`, `/proc/self/cgroup`, `/sys/fs/cgroup`).

use std::path::{Path, PathBuf};

/// Workers when no CPU quota bounds the process (as Linkerd and Istio default their proxies).
pub const UNBOUNDED_WORKERS: usize = 2;

/// What bounds the CPUs the process may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// CPUs in the process's affinity mask (`None`: unknown).
    pub affinity: Option<usize>,
    /// The tightest CPU quota of the process's cgroups, in CPUs rounded up (`None`: none).
    pub quota: Option<usize>,
}

/// How many workers, and why (for the start-up log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers {
    pub count: usize,
    pub budget: Budget,
    /// The `--workers` cap (or `TOKIO_WORKER_THREADS`), if any.
    pub cap: Option<usize>,
}

impl Budget {
    /// The budget of this process, read from the system (Linux; elsewhere unknown).
    pub fn read() -> Self {
        let affinity = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| affinity_of_status(&s));
        let quota = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|s| quota_of_cgroups(&s, Path::new("/sys/fs/cgroup"), |p| std::fs::read_to_string(p).ok()));
        Self { affinity, quota }
    }

    /// Workers for this budget, at most `cap`.
    pub fn workers(self, cap: Option<usize>) -> Workers {
        let cpus = match (self.affinity, self.quota) {
            (Some(a), Some(q)) => a.min(q),
            (None, Some(q)) => q,
            (Some(a), None) => a.min(UNBOUNDED_WORKERS),
            (None, None) => UNBOUNDED_WORKERS,
        };
        let count = cap.map_or(cpus, |c| c.min(cpus)).max(1);
        Workers {
            count,
            budget: self,
            cap,
        }
    }
}

/// CPUs in the `Cpus_allowed_list:` line of `/proc/<pid>/status`.
pub fn affinity_of_status(status: &str) -> Option<usize> {
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    cpu_list_len(list.trim())
}

/// CPUs in a list such as `0-3,8,10-11`.
pub fn cpu_list_len(list: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            None => {
                part.parse::<usize>().ok()?;
                1
            }
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                b.checked_sub(a)? + 1
            }
        };
    }
    (n > 0).then_some(n)
}

/// CPUs a cgroup v2 `cpu.max` allows, rounded up (`max 100000`: no limit).
pub fn cpus_of_cpu_max(cpu_max: &str) -> Option<usize> {
    let mut fields = cpu_max.split_whitespace();
    let (quota, period) = (fields.next()?, fields.next().unwrap_or("100000"));
    cpus_of(quota.parse().ok()?, period.parse().ok()?)
}

/// CPUs a quota of `quota` µs per `period` µs allows, rounded up.
fn cpus_of(quota: i64, period: i64) -> Option<usize> {
    if quota <= 0 || period <= 0 {
        return None;
    }
    Some((quota as u64).div_ceil(period as u64) as usize)
}

/// The tightest CPU quota over the cgroups in `/proc/self/cgroup` (`cgroup`), read under the
/// mount `root` through `read` (v2: `cpu.max` of the process's cgroup and each parent; v1:
/// `cpu.cfs_quota_us` / `cpu.cfs_period_us` of the `cpu` controller's cgroup, or of the
/// mount itself, as a container sees it).
pub fn quota_of_cgroups(cgroup: &str, root: &Path, read: impl Fn(&Path) -> Option<String>) -> Option<usize> {
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            // v2: the process's cgroup and every parent up to the mount.
            let mut dir = root.join(rel);
            let mut tightest: Option<usize> = None;
            loop {
                if let Some(cpus) = read(&dir.join("cpu.max")).and_then(|s| cpus_of_cpu_max(&s)) {
                    tightest = Some(tightest.map_or(cpus, |t| t.min(cpus)));
                }
                if dir == root || !dir.pop() || !dir.starts_with(root) {
                    break;
                }
            }
            if tightest.is_some() {
                return tightest;
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            let mount = v1_mount(root, controllers);
            for dir in [mount.join(rel), mount] {
                let quota = read(&dir.join("cpu.cfs_quota_us")).and_then(|s| s.trim().parse().ok());
                let period = read(&dir.join("cpu.cfs_period_us")).and_then(|s| s.trim().parse().ok());
                if let (Some(q), Some(p)) = (quota, period) {
                    return cpus_of(q, p);
                }
            }
        }
    }
    None
}

/// Where a v1 controller set is mounted (`cpu,cpuacct`; some systems link `cpu` to it).
fn v1_mount(root: &Path, controllers: &str) -> PathBuf {
    root.join(controllers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list_len("0"), Some(1));
        assert_eq!(cpu_list_len("0-1"), Some(2));
        assert_eq!(cpu_list_len("0-3,8,10-11"), Some(7));
        assert_eq!(cpu_list_len(""), None);
        assert_eq!(cpu_list_len("3-1"), None);
        assert_eq!(cpu_list_len("x"), None);
        let status = "Name:\tportcullis\nCpus_allowed:\t2\nCpus_allowed_list:\t1\nMems_allowed_list:\t0\n";
        assert_eq!(affinity_of_status(status), Some(1));
    }

    #[test]
    fn quotas_round_up() {
        assert_eq!(cpus_of_cpu_max("max 100000"), None);
        assert_eq!(cpus_of_cpu_max("100000 100000"), Some(1));
        assert_eq!(cpus_of_cpu_max("150000 100000"), Some(2), "1.5 CPUs: two workers");
        assert_eq!(cpus_of_cpu_max("50000 100000"), Some(1));
        assert_eq!(cpus_of_cpu_max("400000 100000\n"), Some(4));
    }

    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = entries
            .iter()
            .map(|(p, c)| (PathBuf::from(p), (*c).to_owned()))
            .collect();
        move |p| map.get(p).cloned()
    }

    #[test]
    fn cgroup_v2_takes_the_tightest_of_the_cgroup_and_its_parents() {
        let root = Path::new("/sys/fs/cgroup");
        let cgroup = "0::/kubepods/pod1/sidecar\n";
        let read = files(&[
            ("/sys/fs/cgroup/kubepods/pod1/sidecar/cpu.max", "max 100000"),
            ("/sys/fs/cgroup/kubepods/pod1/cpu.max", "250000 100000"),
            ("/sys/fs/cgroup/kubepods/cpu.max", "max 100000"),
        ]);
        assert_eq!(quota_of_cgroups(cgroup, root, read), Some(3));
        // A container's namespaced view: its cgroup is the mount itself.
        let read = files(&[("/sys/fs/cgroup/cpu.max", "100000 100000")]);
        assert_eq!(quota_of_cgroups("0::/\n", root, read), Some(1));
        assert_eq!(quota_of_cgroups("0::/\n", root, files(&[])), None);
    }

    #[test]
    fn cgroup_v1_reads_the_cpu_controller() {
        let root = Path::new("/sys/fs/cgroup");
        let cgroup = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n";
        let read = files(&[
            ("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "200000\n"),
            ("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n"),
        ]);
        assert_eq!(quota_of_cgroups(cgroup, root, read), Some(2));
        let unlimited = files(&[
            ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n"),
            ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
        ]);
        assert_eq!(quota_of_cgroups(cgroup, root, unlimited), None);
    }

    #[test]
    fn workers_follow_the_budget_capped_and_never_one_per_node_cpu() {
        let budget = |affinity, quota| Budget { affinity, quota };
        assert_eq!(budget(Some(64), None).workers(None).count, UNBOUNDED_WORKERS);
        assert_eq!(budget(Some(1), None).workers(None).count, 1);
        assert_eq!(budget(Some(64), Some(4)).workers(None).count, 4);
        assert_eq!(budget(Some(2), Some(4)).workers(None).count, 2);
        assert_eq!(budget(Some(64), Some(4)).workers(Some(3)).count, 3);
        assert_eq!(
            budget(Some(64), Some(4)).workers(Some(8)).count,
            4,
            "a cap, not a floor"
        );
        assert_eq!(budget(None, None).workers(Some(0)).count, 1);
    }
}
