# vessel.mode=urandom: reads /dev/urandom early, with no hardware RNG (run without --rng). Before the
# CRNG is ready Linux 6.1 makes the reader wait in try_to_generate_entropy(): a loop of schedule()
# and mix_pool_bytes(), interrupts enabled only briefly, until enough of its timer interrupts have
# fired. That needs interrupts delivered while the guest spins like this.
#   vessel-guest: urandom crng_ready_before=<yes|no>
#   vessel-guest: urandom bytes=<bytes read> ms=<time the read took>
#   vessel-guest: urandom crng_ready_after=<yes|no>
crng_ready() { if dmesg | grep -q 'random: crng init done'; then echo yes; else echo no; fi; }
echo "vessel-guest: urandom crng_ready_before=$(crng_ready)"
t0=$(uptime_ms)
n=$(head -c 16 /dev/urandom | wc -c)
t1=$(uptime_ms)
echo "vessel-guest: urandom bytes=$n ms=$((t1 - t0))"
echo "vessel-guest: urandom crng_ready_after=$(crng_ready)"
