/*
** hm_mux.h: the pending requests of one connection's request mux, found by
** id (a reply's inbox token) and ordered by deadline (the next timeout).
**
** A hash table of chained entries and a binary min-heap of the entries
** that have a deadline; both hold pointers to entries the caller owns.
** The caller embeds an hm_mux_entry at the start of its own record and
** keeps it alive until it is removed. Ties in the heap break by id, so
** requests with one deadline time out in the order they were made.
**
** Pure C: no libuv, no cnats, no clock (deadlines are the caller's
** numbers). Not thread-safe: hm_conn.c uses one per connection, on the
** loop thread.
*/
#ifndef HM_MUX_H
#define HM_MUX_H

#include <stddef.h>
#include <stdint.h>

typedef struct hm_mux_entry {
  uint64_t id;       /* set by the caller before hm_mux_insert */
  uint64_t deadline; /* valid while scheduled */
  size_t hidx;       /* index in the heap, or SIZE_MAX: not scheduled */
  struct hm_mux_entry *hnext;
} hm_mux_entry;

typedef struct hm_mux {
  hm_mux_entry **table;
  size_t tsize, tcount;
  hm_mux_entry **heap;
  size_t hcount, hcap;
} hm_mux;

void hm_mux_init(hm_mux *m);
/* Frees the mux's own arrays; the entries are the caller's. */
void hm_mux_free(hm_mux *m);

/* Adds e (id set, unscheduled) to the table. -1: out of memory (nothing
** changed). */
int hm_mux_insert(hm_mux *m, hm_mux_entry *e);
hm_mux_entry *hm_mux_find(const hm_mux *m, uint64_t id);
/* Takes e out of the table and, if scheduled, out of the heap. */
void hm_mux_remove(hm_mux *m, hm_mux_entry *e);

/* Gives e (in the table) the deadline d, scheduling it or moving it.
** -1: out of memory (e stays as it was). */
int hm_mux_schedule(hm_mux *m, hm_mux_entry *e, uint64_t d);
/* The scheduled entry with the smallest deadline, or NULL. */
hm_mux_entry *hm_mux_earliest(const hm_mux *m);

/* Some entry of the table, or NULL when it is empty: for taking every
** entry out one by one (remove it before asking again). *cursor starts at
** 0 and is the caller's, so the whole walk is one pass over the table. */
hm_mux_entry *hm_mux_any(const hm_mux *m, size_t *cursor);
size_t hm_mux_count(const hm_mux *m);

#endif
