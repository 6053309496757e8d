#!/bin/sh
# Starts sshd, then dockerd with the arguments given ("$@"). When dockerd dies within its
# first seconds (a storage driver that cannot nest), it is started again with vfs.
# dockerd's output goes to /var/log/dockerd.log (the tests show it when the engine fails).
set -u
ssh-keygen -A >/dev/null 2>&1
/usr/sbin/sshd -E /var/log/sshd.log
# Not privileged (the engine here cannot grant every capability): with CAP_SYS_ADMIN and
# no AppArmor, /sys and the cgroup hierarchies can be made writable for the inner dockerd.
mount -o remount,rw /sys 2>/dev/null || mount -o remount,bind,rw /sys 2>/dev/null || :
for dir in /sys/fs/cgroup/*; do
    mountpoint -q "$dir" && mount -o remount,bind,rw "$dir" 2>/dev/null
done
mountpoint -q /sys/kernel/security || mount -t securityfs none /sys/kernel/security 2>/dev/null || :
# cgroup v2 nesting (as docker:dind does): move ourselves out of the root cgroup.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p /sys/fs/cgroup/init
    xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
    sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers \
        > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || :
fi
# The TLS host's certificate names the address the container was given: the test copies
# it in after the start, so dockerd waits for the file named by REMOTE_HOST_WAIT_FOR.
if [ -n "${REMOTE_HOST_WAIT_FOR:-}" ]; then
    n=0
    while [ ! -s "$REMOTE_HOST_WAIT_FOR" ] && [ $n -lt 1200 ]; do
        n=$((n + 1))
        sleep 0.1
    done
fi
start() {
    dockerd "$@" >>/var/log/dockerd.log 2>&1 &
    pid=$!
}
start "$@"
n=0
while [ $n -lt 30 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "remote-host: dockerd exited; starting it again with --storage-driver vfs" \
            >>/var/log/dockerd.log
        start --storage-driver vfs "$@"
        break
    fi
    if [ -S /var/run/docker.sock ] && docker version >/dev/null 2>&1; then
        break
    fi
    n=$((n + 1))
    sleep 0.5
done
echo "remote-host: up" >>/var/log/dockerd.log
wait "$pid"
echo "remote-host: dockerd exited with $?" >>/var/log/dockerd.log
# Keep the container (and its logs) for the test to read.
exec sleep infinity
