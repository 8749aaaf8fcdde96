# vessel.mode=vsock: virtio-vsock with /bin/vsock-tool (guests/linux/vsock-tool.c), driven from the
# host by tests/integration/virtio_vsock.py. Output, in order:
#   vessel-guest: vsock cid=<this guest's CID>
#   vessel-guest: vsock listening echo=1234 recv=1235     (the host may connect from now on)
#   vessel-guest: vsock echo in=<bytes> out=<bytes> status=<exit status>
#   vessel-guest: vsock recv bytes=<n> sha256=<of what port 1235 received> status=<exit status>
#   vessel-guest: vsock send bytes=<n> sha256=<of what was sent to CID 2 port 5000> status=<exit status> ms=<elapsed>
#   vessel-guest: vsock refused port=5001 status=<exit status> error=<vsock-tool's message>
#   vessel-guest: vsock done
# Every step has a timeout (busybox timeout) so that a broken device fails the test, not hangs it.
vsock_wait=600
echo "vessel-guest: vsock cid=$(vsock-tool cid 2>&1)"

# Host -> guest: an echo server on 1234 and a sink on 1235, both waiting for the host's CONNECT.
timeout $vsock_wait vsock-tool echo 1234 2>/tmp/echo.err &
echo_pid=$!
timeout $vsock_wait vsock-tool listen 1235 </dev/null >/tmp/recv 2>/tmp/recv.err &
recv_pid=$!
# Both are listening once their sockets show up in /proc/net/vsock... which busybox's kernel
# may not offer; a short pause is enough (bind+listen take microseconds even here).
sleep 1
echo "vessel-guest: vsock listening echo=1234 recv=1235"

wait $echo_pid
status=$?
set -- $(sed -n 's/^vsock-tool: in=\([0-9-]*\) out=\([0-9-]*\)$/\1 \2/p' /tmp/echo.err)
echo "vessel-guest: vsock echo in=${1:-?} out=${2:-?} status=$status"
[ "$status" = 0 ] || sed 's/^/vessel-guest: vsock echo stderr: /' /tmp/echo.err

wait $recv_pid
status=$?
n=$(wc -c </tmp/recv)
set -- $(sha256sum </tmp/recv)
echo "vessel-guest: vsock recv bytes=$n sha256=$1 status=$status"
[ "$status" = 0 ] || sed 's/^/vessel-guest: vsock recv stderr: /' /tmp/recv.err
rm -f /tmp/recv

# Guest -> host: 1 MiB to CID 2 port 5000 (the host listens at PATH_5000). The data is the text of
# the numbers 1, 2, 3...: every byte position differs, so a lost, doubled or reordered packet
# changes the hash. (Not /dev/urandom: before the guest's RNG is seeded a read of it can wait for
# jitter entropy, which takes long on a software CPU.)
seq 1 200000 | head -c 1048576 >/tmp/send
n=$(wc -c </tmp/send)
set -- $(sha256sum </tmp/send)
sum=$1
t0=$(uptime_ms)
timeout $vsock_wait vsock-tool connect 2 5000 </tmp/send >/tmp/send.reply 2>/tmp/send.err
status=$?
t1=$(uptime_ms)
echo "vessel-guest: vsock send bytes=$n sha256=$sum status=$status ms=$((t1 - t0))"
[ "$status" = 0 ] || sed 's/^/vessel-guest: vsock send stderr: /' /tmp/send.err
rm -f /tmp/send

# Nothing listens at PATH_5001: the device answers the REQUEST with RST.
timeout $vsock_wait vsock-tool connect 2 5001 </dev/null >/dev/null 2>/tmp/refused.err
status=$?
echo "vessel-guest: vsock refused port=5001 status=$status error=$(head -n1 /tmp/refused.err)"
echo "vessel-guest: vsock done"
