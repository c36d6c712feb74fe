/*
** fixed_time.c: an LD_PRELOAD for the callgrind cost benches
** (bench/service_cost.sh). time() answers HM_FIXED_TIME (seconds, 0 when
** unset). Lua's string hash seed mixes time() with addresses, which
** callgrind keeps the same from run to run; with the time fixed too, the
** seed is the same, and so is the layout of every hash table. A process's
** instruction count otherwise moves by a few percent with the seed, which
** is more than some of the costs measured.
*/
#include <stdlib.h>
#include <time.h>

time_t time(time_t *t) {
  static time_t v = (time_t)-1;
  if (v == (time_t)-1) {
    const char *s = getenv("HM_FIXED_TIME");
    v = s != NULL ? (time_t)strtoll(s, NULL, 10) : 0;
  }
  if (t != NULL) *t = v;
  return v;
}
