/*
** test_mux.c: hm_mux, the pending table and deadline heap of the request
** mux, against a plain array that says what it must hold.
*/
#include "hm_mux.h"
#include "hm_test.h"

#define N 2000

static hm_mux_entry ents[N];
static int in[N];        /* in the table */
static uint64_t dl[N];   /* deadline, 0: not scheduled */

/* The scheduled entry a plain scan says is earliest (deadline, then id). */
static hm_mux_entry *oracle_earliest(void) {
  hm_mux_entry *best = NULL;
  for (int k = 0; k < N; k++) {
    if (!in[k] || dl[k] == 0) continue;
    if (best == NULL || dl[k] < best->deadline ||
        (dl[k] == best->deadline && ents[k].id < best->id))
      best = &ents[k];
  }
  return best;
}

TEST(find_and_order) {
  hm_mux m;
  unsigned seed = 7;
  hm_mux_init(&m);
  for (int k = 0; k < N; k++) ents[k].id = (uint64_t)k + 1;
  for (int step = 0; step < 20000; step++) {
    int k = (int)((seed = seed * 1103515245u + 12345u) >> 8) % N;
    int op = (int)(seed >> 4) % 4;
    if (!in[k]) {
      ASSERT(hm_mux_insert(&m, &ents[k]) == 0);
      in[k] = 1;
      dl[k] = 0;
    } else if (op == 0) {
      hm_mux_remove(&m, &ents[k]);
      in[k] = 0;
    } else {
      /* Few distinct deadlines, so ties (broken by id) are common. */
      uint64_t d = 1 + (seed >> 12) % 50;
      ASSERT(hm_mux_schedule(&m, &ents[k], d) == 0);
      dl[k] = d;
    }
    ASSERT(hm_mux_earliest(&m) == oracle_earliest());
  }
  size_t count = 0;
  for (int k = 0; k < N; k++) {
    ASSERT(hm_mux_find(&m, ents[k].id) == (in[k] ? &ents[k] : NULL));
    count += (size_t)in[k];
  }
  ASSERT(hm_mux_count(&m) == count);
  ASSERT(hm_mux_find(&m, N + 100) == NULL);
  /* Taking everything out in one walk leaves it empty. */
  size_t cursor = 0, taken = 0;
  hm_mux_entry *e;
  while ((e = hm_mux_any(&m, &cursor)) != NULL) {
    hm_mux_remove(&m, e);
    in[e - ents] = 0;
    taken++;
  }
  ASSERT(taken == count);
  ASSERT(hm_mux_count(&m) == 0);
  ASSERT(hm_mux_earliest(&m) == NULL);
  hm_mux_free(&m);
}

TEST(empty) {
  hm_mux m;
  size_t cursor = 0;
  hm_mux_init(&m);
  ASSERT(hm_mux_find(&m, 1) == NULL);
  ASSERT(hm_mux_earliest(&m) == NULL);
  ASSERT(hm_mux_any(&m, &cursor) == NULL);
  hm_mux_free(&m);
}

int main(void) {
  RUN(empty);
  RUN(find_and_order);
  TEST_EXIT();
}
