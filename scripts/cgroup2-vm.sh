#!/usr/bin/env bash
# Runs kiln-runtime's privileged tests on a pure cgroup v2 kernel: Debian's own kernel
# (from Debian's package registry) booted under QEMU (TCG) with every v1 controller
# disabled, the tests in a delegated cgroup the way systemd gives one to a service with
# Delegate=yes. Also checks that an undelegated cgroup is refused up front, and that no
# sandbox cgroup is left behind. Exit code 0 only on a PASS from inside the VM.
#   scripts/cgroup2-vm.sh            KILN_VM_TIMEOUT=1800 scripts/cgroup2-vm.sh
# Needs root, qemu-system-x86, cpio, busybox-static, bubblewrap (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${KILN_VM_CACHE:-/var/cache/kiln-test/vm}"
timeout_secs="${KILN_VM_TIMEOUT:-900}"
log="${KILN_VM_LOG:-$cache/console.log}"
say() { printf 'cgroup2-vm: %s\n' "$*" >&2; }

for tool in qemu-system-x86_64 cpio busybox bwrap dpkg-deb apt-get gzip; do
  command -v "$tool" >/dev/null || { say "missing $tool (apt-get install qemu-system-x86 cpio busybox-static bubblewrap)"; exit 2; }
done
[ -e /bin/busybox ] || { say "/bin/busybox (busybox-static) is needed"; exit 2; }

work="$(mktemp -d /var/tmp/kiln-vm.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache"

# ---- 1. Debian's current kernel: vmlinuz, overlay.ko, and for the sandboxes' disk limits
#         loop.ko, ext4.ko and crc32c (which ext4 asks the crypto API for); each with what
#         it depends on, unless built in ----
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
pkg="$(kernel_package)"
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg="$(kernel_package)"
fi
[ -n "$pkg" ] || { say "cannot tell which kernel linux-image-amd64 depends on"; exit 2; }
kdir="$cache/$pkg"
want_modules="overlay loop crc32c_generic ext4"
# Project quotas (tests/disk_quota.rs): XFS with its quota code, and ext4's quota format.
want_modules="$want_modules quota_v2 xfs"
if [ ! -f "$kdir/vmlinuz" ] || [ ! -f "$kdir/modules.order" ] \
  || [ "$(cat "$kdir/modules.want" 2>/dev/null)" != "$want_modules" ]; then
  say "fetching $pkg from Debian"
  rm -rf "$kdir.tmp"
  mkdir -p "$work/deb" "$kdir.tmp/modules"
  (cd "$work/deb" && apt-get download -q "$pkg" >/dev/null)
  dpkg-deb -x "$work"/deb/*.deb "$work/deb/x"
  cp "$work"/deb/x/boot/vmlinuz-* "$kdir.tmp/vmlinuz"
  : > "$kdir.tmp/modules.order"
  add_module() { # $1: module name; its dependencies are loaded first
    local ko deps dep
    grep -qx "$1.ko" "$kdir.tmp/modules.order" && return 0
    grep -qE "/$1\.ko$" "$work"/deb/x/lib/modules/*/modules.builtin 2>/dev/null && return 0
    ko="$(find "$work/deb/x/lib/modules" -name "$1.ko*" | head -n 1)"
    [ -n "$ko" ] || { say "module $1 not in $pkg"; exit 2; }
    case "$ko" in
      *.xz) xz -dc "$ko" > "$kdir.tmp/modules/$1.ko" ;;
      *.zst) zstd -qdc "$ko" > "$kdir.tmp/modules/$1.ko" ;;
      *) cp "$ko" "$kdir.tmp/modules/$1.ko" ;;
    esac
    # The modinfo section: NUL-separated key=value strings.
    deps="$(tr '\0' '\n' < "$kdir.tmp/modules/$1.ko" | sed -n 's/^depends=//p' | tr ',' ' ')"
    for dep in $deps; do add_module "$dep"; done
    echo "$1.ko" >> "$kdir.tmp/modules.order"
  }
  for m in $want_modules; do add_module "$m"; done
  echo "$want_modules" > "$kdir.tmp/modules.want"
  rm -rf "$kdir" && mv "$kdir.tmp" "$kdir"
fi

# ---- 2. What runs inside: the static agent and kiln-runtime's test binaries ----
agent="${KILN_AGENT_BIN:-$(scripts/build-agent.sh | tail -n 1)}"
say "building kiln-runtime's tests"
mapfile -t tests < <(cargo test -p kiln-runtime --no-run --message-format=json \
  | grep '"reason":"compiler-artifact"' | grep 'kiln-runtime#' \
  | grep -o '"executable":"/[^"]*"' | sed 's/^"executable":"//; s/"$//')
[ ${#tests[@]} -gt 0 ] || { say "cargo built no test binaries"; exit 2; }

# ---- 3. The initramfs ----
root="$work/root"
mkdir -p "$root"/{bin,usr/bin,proc,sys,dev,tmp,run,root,etc,var/tmp,var/cache,newroot,kiln/tests,kiln/modules}
cp /bin/busybox "$root/bin/busybox"
copy_libs() { # the shared libraries of program $1
  ldd "$1" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
copy_with_libs() { # $1: a dynamically linked program, $2: where it goes
  cp "$1" "$root$2"
  copy_libs "$1"
}
copy_with_libs "$(command -v bwrap)" /usr/bin/bwrap
# Snapshots copy with `cp --reflink=auto`, which busybox's cp does not know.
copy_with_libs "$(command -v cp)" /usr/bin/cp
# Sandbox disks are ext4 images made with mke2fs.
mkfs_ext4="$(PATH="$PATH:/usr/sbin:/sbin" command -v mkfs.ext4)" || { say "missing mkfs.ext4 (apt-get install e2fsprogs)"; exit 2; }
copy_with_libs "$mkfs_ext4" /usr/bin/mkfs.ext4
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"
# The project-quota tests make an XFS filesystem.
mkfs_xfs="$(PATH="$PATH:/usr/sbin:/sbin" command -v mkfs.xfs)" || { say "missing mkfs.xfs (apt-get install xfsprogs)"; exit 2; }
copy_with_libs "$mkfs_xfs" /usr/bin/mkfs.xfs
cp "$agent" "$root/kiln/kiln-agent"
# ---- The Docker engine for docker_limits (docker.io's dockerd, containerd, shim, runc),
#      started in the VM on a loop-mounted XFS with prjquota; without docker.io, skipped ----
docker_engine() {
  local b p
  [ -e "$root/kiln/docker" ] && return 0
  for b in dockerd containerd containerd-shim-runc-v2 runc; do
    p="$(PATH="$PATH:/usr/sbin:/sbin" command -v "$b")" || { say "no $b: docker_limits not run in the VM"; return 1; }
    copy_with_libs "$p" "/usr/bin/$b"
  done
  touch "$root/kiln/docker"
}
for t in "${tests[@]}"; do
  name="$(basename "$t")"
  # KILN_VM_TESTS="disk_quota limits": only these test binaries (while iterating).
  if [ -n "${KILN_VM_TESTS:-}" ] && ! printf ' %s ' $KILN_VM_TESTS | grep -q " ${name%-*} "; then continue; fi
  # The container backends' tests exercise an API server or an engine, not this kernel's
  # cgroups: they run on the host (the VM has neither an engine nor its loopback aliases).
  # Except docker_limits: the VM's engine below has what the host's lacks, an XFS data
  # root with project quotas, so a Docker disk limit is proven to end in ENOSPC here.
  case "${name%-*}" in kubernetes|kubernetes_agent_sandbox|docker|docker_security) continue ;; esac
  if [ "${name%-*}" = docker_limits ] && ! docker_engine; then continue; fi
  strip --strip-debug -o "$root/kiln/tests/${name%-*}" "$t" 2>/dev/null || cp "$t" "$root/kiln/tests/${name%-*}"
  copy_libs "$t"
done
cp "$kdir"/modules/*.ko "$kdir/modules.order" "$root/kiln/modules/"
# KILN_VM_TEST_ARGS="--ignored --nocapture create_time": extra arguments for each test binary.
printf '%s\n' "${KILN_VM_TEST_ARGS:-}" > "$root/kiln/test-args"

# The initramfs is the kernel's rootfs, which cannot be pivot_root'ed away (bubblewrap
# does that): stage 1 copies everything to a tmpfs and switches root to it.
cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t tmpfs -o mode=0755 tmpfs /newroot
for d in /bin /usr /lib /lib64 /kiln /etc /root /var /tmp /run /stage2; do
  [ -e "$d" ] && /bin/busybox cp -a "$d" /newroot/
done
/bin/busybox mkdir -p /newroot/proc /newroot/sys /newroot/dev
exec /bin/busybox switch_root /newroot /stage2
EOF
cat > "$root/stage2" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin HOME=/root CI=1 KILN_AGENT_BIN=/kiln/kiln-agent RUST_BACKTRACE=1
# The VM's disk is its RAM: the disk-limit tests write a 128 MiB limit's worth, not 1 GiB.
export KILN_TEST_DISK_MIB=128
# Debian's kernel has project quotas: their tests must run, not skip.
export KILN_TEST_EXPECT_QUOTA=required
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
chmod 1777 /tmp /var/tmp
finish() { echo "KILN-VM SUMMARY $1"; sync; poweroff -f; sleep 60; }
# Only the unified hierarchy: refuse to test anything else.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
if grep -qE '^[^ ]+ [^ ]+ cgroup ' /proc/mounts; then echo "KILN-VM a cgroup v1 hierarchy is mounted"; finish FAIL; fi
mkdir -p /tmp/v1probe
if mount -t cgroup -o memory cgroup /tmp/v1probe 2>/dev/null; then echo "KILN-VM v1 memory controller mountable"; finish FAIL; fi
echo "KILN-VM kernel $(uname -r); cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
for m in $(cat /kiln/modules/modules.order); do insmod /kiln/modules/$m || { echo "KILN-VM insmod $m failed"; finish FAIL; }; done
grep -q overlay /proc/filesystems || { echo "KILN-VM no overlayfs"; finish FAIL; }
grep -q ext4 /proc/filesystems && [ -e /dev/loop-control ] || { echo "KILN-VM no ext4 or loop devices"; finish FAIL; }
cg=/sys/fs/cgroup
echo "+memory +pids +cpu" > $cg/cgroup.subtree_control
mkdir -p $cg/kiln.slice $cg/undelegated/kiln.service
echo "+memory +pids +cpu" > $cg/kiln.slice/cgroup.subtree_control
failed=""
# Each binary as its own "service": a fresh cgroup below kiln.slice, which delegates the
# controllers to it; the process moves itself in and execs, as systemd starts a unit.
run_in() { # name cgroup command...
  name=$1 dir=$2; shift 2
  mkdir -p "$dir"
  echo "KILN-VM RUN $name in ${dir#$cg}"
  start=$(cut -d. -f1 /proc/uptime)
  sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$dir" "$@"
  rc=$?
  echo "KILN-VM RESULT $name rc=$rc in $(( $(cut -d. -f1 /proc/uptime) - start )) s"
  [ $rc -eq 0 ] || failed="$failed $name"
}
# The engine docker_limits uses: its data root an XFS with project quotas (storage_opt size).
start_dockerd() {
  dd=/var/tmp/dockerd
  mkdir -p $dd/data $dd/exec /etc
  [ -e /etc/hosts ] || echo "127.0.0.1 localhost" > /etc/hosts
  : >> /etc/resolv.conf
  truncate -s 2G $dd/data.xfs && mkfs.xfs -q -f $dd/data.xfs && mount -o loop,prjquota $dd/data.xfs $dd/data || return 1
  dockerd --data-root $dd/data --exec-root $dd/exec --host unix://$dd/docker.sock --bridge=none \
    --iptables=false --ip-masq=false > $dd/dockerd.log 2>&1 &
  dockerd_pid=$!
  # The socket appears once the engine has initialised and listens.
  for i in $(seq 300); do [ -S $dd/docker.sock ] && break; sleep 0.2; done
  [ -S $dd/docker.sock ] || return 1
  export KILN_TEST_DOCKER_HOST=unix://$dd/docker.sock KILN_TEST_EXPECT_DOCKER_DISK_LIMIT=required
}
# The other binaries run without an engine, its mounts or its loop device around.
stop_dockerd() {
  kill $dockerd_pid 2>/dev/null
  for i in $(seq 100); do kill -0 $dockerd_pid 2>/dev/null || break; sleep 0.1; done
  umount $dd/data 2>/dev/null
  unset KILN_TEST_DOCKER_HOST KILN_TEST_EXPECT_DOCKER_DISK_LIMIT
}
for t in /kiln/tests/*; do
  name=$(basename $t)
  svc=$cg/kiln.slice/kiln-test-$name.service
  only=""
  if [ $name = docker_limits ]; then
    if ! start_dockerd; then
      echo "KILN-VM cannot start dockerd on XFS"; tail -n 20 /var/tmp/dockerd/dockerd.log; failed="$failed dockerd"; continue
    fi
    # Only the disk limit needs this kernel; admission runs on the host (and takes a
    # minute under TCG).
    only=a_disk_limit
  fi
  run_in $name $svc $t --test-threads=2 $(cat /kiln/test-args 2>/dev/null) $only
  [ $name = docker_limits ] && stop_dockerd
  left=$(find $svc/kiln -mindepth 2 -type d 2>/dev/null)
  if [ -n "$left" ]; then echo "KILN-VM sandbox cgroups left behind by $name: $left"; failed="$failed $name-leftovers"; fi
done
[ -x /kiln/tests/host_check ] && run_in host_check-undelegated $cg/undelegated/kiln.service \
  env KILN_TEST_EXPECT_CGROUPS=refused /kiln/tests/host_check --nocapture
if [ -n "$failed" ]; then echo "KILN-VM failed:$failed"; finish FAIL; fi
finish PASS
EOF
chmod +x "$root/init" "$root/stage2"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

# ---- 4. Boot: TCG (nested KVM hangs on these machines), console to the log ----
say "booting $pkg under QEMU (TCG; console in $log; at most ${timeout_secs} s)"
started=$(date +%s)
rc=0
timeout --kill-after=10 "$timeout_secs" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2G \
  -nographic -monitor none -serial "file:$log" -no-reboot \
  -kernel "$kdir/vmlinuz" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 rdinit=/init panic=-1 loglevel=4 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" \
  </dev/null >/dev/null || rc=$?
grep -E '^KILN-VM|^test result|panicked|FAILED|^---- ' "$log" >&2 || true
say "VM ran $(( $(date +%s) - started )) s"
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  say "FAIL: timed out after ${timeout_secs} s"
  exit 1
fi
if grep -q '^KILN-VM SUMMARY PASS' "$log"; then
  say "PASS"
  exit 0
fi
say "FAIL (see $log)"
exit 1
