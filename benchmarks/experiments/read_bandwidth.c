/* One core's read bandwidth by working-set size: how much of the last-level cache a key switch
 * could use. Each array is read whole with 64-byte vector loads, repeatedly; the best pass counts.
 *   gcc -O2 -mavx512f benchmarks/experiments/read_bandwidth.c -o /tmp/read_bandwidth && /tmp/read_bandwidth
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  for (size_t mb = 1; mb <= 512; mb *= 2) {
    const size_t n = mb * 1024 * 1024 / 8;
    uint64_t* a = aligned_alloc(64, n * 8);
    if (!a) return 1;
    for (size_t i = 0; i < n; i++) a[i] = i;
    int reps = (int)(2048 / mb);
    if (reps < 3) reps = 3;
    double best = 1e9;
    __m512i s = _mm512_setzero_si512();
    for (int r = 0; r < reps; r++) {
      double t = now();
      for (size_t i = 0; i < n; i += 32) {
        s = _mm512_add_epi64(s, _mm512_load_si512(a + i));
        s = _mm512_add_epi64(s, _mm512_load_si512(a + i + 8));
        s = _mm512_add_epi64(s, _mm512_load_si512(a + i + 16));
        s = _mm512_add_epi64(s, _mm512_load_si512(a + i + 24));
      }
      t = now() - t;
      if (t < best) best = t;
    }
    long long o[8];
    _mm512_storeu_si512(o, s);
    printf("%4zu MB: %6.1f GB/s (checksum bit %lld)\n", mb, mb / 1024.0 / best, o[0] & 1);
    free(a);
  }
  return 0;
}
