# vessel.mode=clock: the guest's clocksource (kvm-clock on both engines) and whether time runs.
#   vessel-guest: clocksource current=<name> available=<names, space-separated>
#   vessel-guest: kvm-clock msrs=<MSR pair from "kvm-clock: Using msrs ..."|none> hypervisor=<name|none>
#   vessel-guest: clock unstable_reports=<kernel log lines about unstable clocks or TSC>
#   vessel-guest: dmesg: <each of those lines, at most 5>
#   vessel-guest: sleep1 uptime_ms=<uptime change across `sleep 1`> epoch_s=<wall-clock change, 1 s resolution>
#   vessel-guest: epoch=<wall clock, seconds since 1970>
cs=/sys/devices/system/clocksource/clocksource0
echo "vessel-guest: clocksource current=$(cat $cs/current_clocksource) available=$(cat $cs/available_clocksource)"

# "kvm-clock: Using msrs 4b564d01 and 4b564d00" (KERN_INFO: in the log buffer even with quiet).
msrs=$(dmesg | sed -n 's/.*kvm-clock: Using msrs \([0-9a-f]*\) and \([0-9a-f]*\).*/\1,\2/p' | head -n 1)
hv=$(dmesg | sed -n 's/.*Hypervisor detected: \(.*\)$/\1/p' | head -n 1)
echo "vessel-guest: kvm-clock msrs=${msrs:-none} hypervisor=${hv:-none}"
unstable=$(dmesg | grep -iE 'unstable|clocksource watchdog|skew')
echo "vessel-guest: clock unstable_reports=$(printf '%s' "$unstable" | grep -c .)"
printf '%s\n' "$unstable" | head -n 5 | while read -r line; do [ -n "$line" ] && echo "vessel-guest: dmesg: $line"; done

# Time advances: sleep is timer-based, so a slow soft CPU stretches it only by scheduling delay.
u0=$(uptime_ms) e0=$(date +%s)
sleep 1
u1=$(uptime_ms) e1=$(date +%s)
echo "vessel-guest: sleep1 uptime_ms=$((u1 - u0)) epoch_s=$((e1 - e0))"
echo "vessel-guest: epoch=$(date +%s)"
