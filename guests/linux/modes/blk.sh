# vessel.mode=blk: virtio-blk disks (tests/integration/virtio_blk.sh, bench/virtio-blk.sh).
# What it does depends on vessel.blk=<task> on the kernel command line:
#
#   vessel.blk=fs (default): /dev/vda is a writable ext4 image holding /known; /dev/vdb, if present,
#   a read-only ext4 image holding /known as well.
#     vessel-guest: blk vda size=<512-byte sectors> serial=<GET_ID string> ro=<0|1>
#     vessel-guest: blk known sha256=<sha256 of /known on vda>
#     vessel-guest: blk newfile written bytes=<n>    (/newfile = `seq 1 30000`, which the host
#                                                     recomputes and reads back with debugfs)
#     vessel-guest: blk sync done                    (after `sync`: ext4 has committed its journal
#                                                     and sent FLUSH; the host may kill the VMM now)
#     vessel-guest: blk fstrim ok|FAILED             (DISCARD of the free blocks)
#     vessel-guest: blk umount ok|FAILED
#   and with vdb:
#     vessel-guest: blk vdb size=<n> serial=<id> ro=1
#     vessel-guest: blk vdb mount=ok|FAILED known sha256=<...> write=refused|ACCEPTED raw=refused|ACCEPTED
#
#   vessel.blk=fs-kill: the same up to "sync done", then the guest waits (the host kills the VMM
#   with SIGKILL at that line and checks that the synced file is in the image).
#
#   vessel.blk=bench: /dev/vda is a raw (unformatted) disk of at least 256 MiB; sequential
#   O_DIRECT reads and writes of 256 MiB with busybox dd, timed in the guest (10 ms resolution):
#     vessel-guest: blk bench read ms=<n> bytes=<8 x 268435456>
#     vessel-guest: blk bench write ms=<n> bytes=<8 x 268435456>
task=fs
for word in $(cat /proc/cmdline); do
  case "$word" in vessel.blk=*) task=${word#vessel.blk=} ;; esac
done

blk_info() { # name
  echo "vessel-guest: blk $1 size=$(cat /sys/block/$1/size 2>/dev/null) serial=$(cat /sys/block/$1/serial 2>/dev/null) ro=$(cat /sys/block/$1/ro 2>/dev/null)"
}

blk_fs() {
  if [ ! -b /dev/vda ]; then
    echo "vessel-guest: blk no /dev/vda"
    return
  fi
  blk_info vda
  mkdir -p /mnt/vda
  if ! mount -t ext4 /dev/vda /mnt/vda; then
    echo "vessel-guest: blk mount vda FAILED"
    return
  fi
  set -- $(sha256sum </mnt/vda/known)
  echo "vessel-guest: blk known sha256=$1"
  seq 1 30000 >/mnt/vda/newfile
  echo "vessel-guest: blk newfile written bytes=$(wc -c </mnt/vda/newfile)"
  sync
  echo "vessel-guest: blk sync done"
  if [ "$task" = fs-kill ]; then
    sleep 600
    echo "vessel-guest: blk was not killed"
    return
  fi
  if fstrim /mnt/vda >/dev/null 2>&1; then echo "vessel-guest: blk fstrim ok"; else echo "vessel-guest: blk fstrim FAILED"; fi
  if umount /mnt/vda; then echo "vessel-guest: blk umount ok"; else echo "vessel-guest: blk umount FAILED"; fi

  [ -b /dev/vdb ] || return
  blk_info vdb
  mkdir -p /mnt/vdb
  if mount -t ext4 -o ro /dev/vdb /mnt/vdb; then
    set -- $(sha256sum </mnt/vdb/known)
    sum=$1
    if (echo x >/mnt/vdb/x) 2>/dev/null; then write=ACCEPTED; else write=refused; fi
    umount /mnt/vdb
    mount=ok
  else
    mount=FAILED sum=none write=none
  fi
  # The block device itself must refuse writes too (the kernel honours VIRTIO_BLK_F_RO).
  if dd if=/dev/zero of=/dev/vdb bs=512 count=1 conv=fsync 2>/dev/null; then raw=ACCEPTED; else raw=refused; fi
  echo "vessel-guest: blk vdb mount=$mount known sha256=$sum write=$write raw=$raw"
}

blk_bench() {
  if [ ! -b /dev/vda ]; then
    echo "vessel-guest: blk no /dev/vda"
    return
  fi
  blk_info vda
  # Eight passes over the 256 MiB image each way: the guest clock (/proc/uptime) counts in 10 ms
  # steps, and one pass takes ~100 ms at the speeds measured.
  passes=8
  t0=$(uptime_ms)
  i=0
  while [ $i -lt $passes ]; do
    dd if=/dev/vda of=/dev/null bs=1M count=256 iflag=direct 2>/tmp/dd.err || { echo "vessel-guest: blk bench read FAILED $(cat /tmp/dd.err)"; return; }
    i=$((i + 1))
  done
  t1=$(uptime_ms)
  echo "vessel-guest: blk bench read ms=$((t1 - t0)) bytes=$((passes * 256 * 1048576))"
  t0=$(uptime_ms)
  i=0
  while [ $i -lt $passes ]; do
    dd if=/dev/zero of=/dev/vda bs=1M count=256 oflag=direct 2>/tmp/dd.err || { echo "vessel-guest: blk bench write FAILED $(cat /tmp/dd.err)"; return; }
    i=$((i + 1))
  done
  t1=$(uptime_ms)
  echo "vessel-guest: blk bench write ms=$((t1 - t0)) bytes=$((passes * 256 * 1048576))"
}

case "$task" in
  fs | fs-kill) blk_fs ;;
  bench) blk_bench ;;
  *) echo "vessel-guest: blk unknown task vessel.blk=$task (fs, fs-kill, bench)" ;;
esac
