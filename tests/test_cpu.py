"""``procpool._cpu.cgroup_cpu_quota`` against fake ``/proc/self/cgroup`` files and cgroup trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import procpool
from procpool._cpu import cgroup_cpu_quota


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "sys-fs-cgroup"
    path.mkdir()
    return path


def membership(tmp_path: Path, text: str) -> Path:
    return write(tmp_path / "proc-self-cgroup", text)


# -- cgroup v2 ------------------------------------------------------------------------------


def test_v2_no_limit(tmp_path: Path, root: Path) -> None:
    write(root / "user.slice/app.scope/cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, "0::/user.slice/app.scope\n"), root) is None


def test_v2_fractional_quota_rounds_up(tmp_path: Path, root: Path) -> None:
    write(root / "user.slice/app.scope/cpu.max", "150000 100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, "0::/user.slice/app.scope\n"), root) == 2


def test_v2_small_quota_is_at_least_one(tmp_path: Path, root: Path) -> None:
    write(root / "app/cpu.max", "10000 100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, "0::/app\n"), root) == 1


def test_v2_whole_quota(tmp_path: Path, root: Path) -> None:
    write(root / "app/cpu.max", "400000 100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, "0::/app\n"), root) == 4


def test_v2_limit_on_an_ancestor(tmp_path: Path, root: Path) -> None:
    write(root / "kubepods.slice/cpu.max", "300000 100000\n")
    write(root / "kubepods.slice/pod1/cpu.max", "max 100000\n")
    write(root / "kubepods.slice/pod1/ctr/cpu.max", "max 100000\n")
    path = membership(tmp_path, "0::/kubepods.slice/pod1/ctr\n")
    assert cgroup_cpu_quota(path, root) == 3


def test_v2_tightest_limit_wins(tmp_path: Path, root: Path) -> None:
    write(root / "a/cpu.max", "200000 100000\n")
    write(root / "a/b/cpu.max", "500000 100000\n")
    write(root / "a/b/c/cpu.max", "800000 100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, "0::/a/b/c\n"), root) == 2


def test_v2_root_cgroup(tmp_path: Path, root: Path) -> None:
    write(root / "cpu.max", "250000 100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, "0::/\n"), root) == 3


def test_v2_own_cgroup_missing_falls_back_to_ancestors(tmp_path: Path, root: Path) -> None:
    # In a container without a cgroup namespace the host path may not exist under the mount.
    write(root / "cpu.max", "100000 100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, "0::/docker/abcdef\n"), root) == 1


def test_v2_malformed_cpu_max_is_ignored(tmp_path: Path, root: Path) -> None:
    write(root / "app/cpu.max", "garbage\n")
    assert cgroup_cpu_quota(membership(tmp_path, "0::/app\n"), root) is None


# -- cgroup v1 ------------------------------------------------------------------------------

V1_MEMBERSHIP = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"


def test_v1_no_quota(tmp_path: Path, root: Path) -> None:
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, V1_MEMBERSHIP), root) is None


def test_v1_half_cpu_is_one(tmp_path: Path, root: Path) -> None:
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, V1_MEMBERSHIP), root) == 1


def test_v1_limit_on_an_ancestor(tmp_path: Path, root: Path) -> None:
    write(root / "cpu,cpuacct/docker/cpu.cfs_quota_us", "250000\n")
    write(root / "cpu,cpuacct/docker/cpu.cfs_period_us", "100000\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n")
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, V1_MEMBERSHIP), root) == 3


def test_v1_controller_order_does_not_matter(tmp_path: Path, root: Path) -> None:
    write(root / "cpuacct,cpu/x/cpu.cfs_quota_us", "200000\n")
    write(root / "cpuacct,cpu/x/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, "3:cpuacct,cpu:/x\n"), root) == 2


def test_v1_period_missing_is_no_limit(tmp_path: Path, root: Path) -> None:
    write(root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n")
    assert cgroup_cpu_quota(membership(tmp_path, V1_MEMBERSHIP), root) is None


def test_v1_cpuacct_alone_is_not_the_cpu_controller(tmp_path: Path, root: Path) -> None:
    write(root / "cpuacct/x/cpu.cfs_quota_us", "50000\n")
    write(root / "cpuacct/x/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(membership(tmp_path, "3:cpuacct:/x\n"), root) is None


# -- hybrid and missing ---------------------------------------------------------------------


def test_hybrid_takes_tightest_of_v1_and_v2(tmp_path: Path, root: Path) -> None:
    write(root / "cpu,cpuacct/s/cpu.cfs_quota_us", "300000\n")
    write(root / "cpu,cpuacct/s/cpu.cfs_period_us", "100000\n")
    write(root / "s/cpu.max", "100000 100000\n")
    text = "4:cpu,cpuacct:/s\n0::/s\n"
    assert cgroup_cpu_quota(membership(tmp_path, text), root) == 1


def test_missing_membership_file(tmp_path: Path, root: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "does-not-exist", root) is None


def test_missing_cgroup_tree(tmp_path: Path) -> None:
    path = membership(tmp_path, "0::/user.slice\n")
    assert cgroup_cpu_quota(path, tmp_path / "no-such-root") is None


def test_empty_membership_file(tmp_path: Path, root: Path) -> None:
    assert cgroup_cpu_quota(membership(tmp_path, ""), root) is None


def test_cpu_count_is_sane() -> None:
    count = procpool.cpu_count()
    assert isinstance(count, int)
    assert 1 <= count <= (os.cpu_count() or 1)
