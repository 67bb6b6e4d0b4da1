"""What the kernel says about a process: resident memory and CPU time (Linux /proc)."""

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """VmRSS: the resident set, the figure the per-session memory is computed from."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15 of stat(5)


def busy_seconds() -> float:
    """CPU time spent by the whole machine so far, all CPUs, anything but idle and I/O wait."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()  # the "cpu" line: user nice system idle iowait irq softirq steal
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7, 8)) / _TICKS


def family_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and of its children, running or ended: a PostgreSQL
    postmaster and its backends, each a process of its own. (A child that has ended but is not
    yet reaped counts in neither, for a moment.)"""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(entry) == pid:  # with cutime and cstime: its children that have ended
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICKS
        elif int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def wait_seconds(pid: int) -> float:
    """Time the process has spent runnable but waiting for a CPU (the scheduler's run queue): where
    it is large, the machine, not the process, set its pace."""
    with open(f"/proc/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[1]) / 1e9
