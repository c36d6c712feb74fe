/*
** hm_mux.c: the pending table and deadline heap of a request mux (see
** hm_mux.h).
*/
#include "hm_mux.h"

#include <stdlib.h>

void hm_mux_init(hm_mux *m) {
  m->table = NULL;
  m->tsize = m->tcount = 0;
  m->heap = NULL;
  m->hcount = m->hcap = 0;
}

void hm_mux_free(hm_mux *m) {
  free(m->table);
  free(m->heap);
  hm_mux_init(m);
}

/* {====================================================================
** Table: ids are sequential, so they are mixed before masking.
** ===================================================================== */

static size_t slot(size_t tsize, uint64_t id) {
  id ^= id >> 33;
  id *= 0xff51afd7ed558ccdULL;
  id ^= id >> 33;
  return (size_t)id & (tsize - 1);
}

static int grow(hm_mux *m) {
  size_t nsize = m->tsize ? m->tsize * 2 : 64, i;
  hm_mux_entry **nt = calloc(nsize, sizeof *nt);
  if (nt == NULL) return -1;
  for (i = 0; i < m->tsize; i++) {
    hm_mux_entry *e = m->table[i];
    while (e != NULL) {
      hm_mux_entry *next = e->hnext;
      size_t h = slot(nsize, e->id);
      e->hnext = nt[h];
      nt[h] = e;
      e = next;
    }
  }
  free(m->table);
  m->table = nt;
  m->tsize = nsize;
  return 0;
}

int hm_mux_insert(hm_mux *m, hm_mux_entry *e) {
  size_t h;
  if (m->tcount + 1 > m->tsize && grow(m) != 0) return -1;
  h = slot(m->tsize, e->id);
  e->hidx = SIZE_MAX;
  e->hnext = m->table[h];
  m->table[h] = e;
  m->tcount++;
  return 0;
}

hm_mux_entry *hm_mux_find(const hm_mux *m, uint64_t id) {
  hm_mux_entry *e;
  if (m->tsize == 0) return NULL;
  for (e = m->table[slot(m->tsize, id)]; e != NULL; e = e->hnext)
    if (e->id == id) return e;
  return NULL;
}

hm_mux_entry *hm_mux_any(const hm_mux *m, size_t *cursor) {
  for (; *cursor < m->tsize; ++*cursor)
    if (m->table[*cursor] != NULL) return m->table[*cursor];
  return NULL;
}

size_t hm_mux_count(const hm_mux *m) { return m->tcount; }

/* }==================================================================== */

/* {====================================================================
** Heap
** ===================================================================== */

static void swap(hm_mux *m, size_t i, size_t j) {
  hm_mux_entry *t = m->heap[i];
  m->heap[i] = m->heap[j];
  m->heap[j] = t;
  m->heap[i]->hidx = i;
  m->heap[j]->hidx = j;
}

static int less(const hm_mux *m, size_t i, size_t j) {
  const hm_mux_entry *a = m->heap[i], *b = m->heap[j];
  return a->deadline < b->deadline ||
         (a->deadline == b->deadline && a->id < b->id);
}

static void up(hm_mux *m, size_t i) {
  while (i > 0 && less(m, i, (i - 1) / 2)) {
    swap(m, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void down(hm_mux *m, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, s = i;
    if (l < m->hcount && less(m, l, s)) s = l;
    if (r < m->hcount && less(m, r, s)) s = r;
    if (s == i) return;
    swap(m, i, s);
    i = s;
  }
}

static void unschedule(hm_mux *m, hm_mux_entry *e) {
  size_t i = e->hidx;
  if (i == SIZE_MAX) return;
  e->hidx = SIZE_MAX;
  if (--m->hcount == i) return;
  m->heap[i] = m->heap[m->hcount];
  m->heap[i]->hidx = i;
  down(m, i);
  up(m, i);
}

int hm_mux_schedule(hm_mux *m, hm_mux_entry *e, uint64_t d) {
  if (e->hidx != SIZE_MAX) {
    e->deadline = d;
    down(m, e->hidx);
    up(m, e->hidx);
    return 0;
  }
  if (m->hcount == m->hcap) {
    size_t ncap = m->hcap ? m->hcap * 2 : 64;
    hm_mux_entry **nh = realloc(m->heap, ncap * sizeof *nh);
    if (nh == NULL) return -1;
    m->heap = nh;
    m->hcap = ncap;
  }
  e->deadline = d;
  m->heap[m->hcount] = e;
  e->hidx = m->hcount++;
  up(m, e->hidx);
  return 0;
}

hm_mux_entry *hm_mux_earliest(const hm_mux *m) {
  return m->hcount > 0 ? m->heap[0] : NULL;
}

/* }==================================================================== */

void hm_mux_remove(hm_mux *m, hm_mux_entry *e) {
  hm_mux_entry **p = &m->table[slot(m->tsize, e->id)];
  while (*p != e) p = &(*p)->hnext;
  *p = e->hnext;
  m->tcount--;
  unschedule(m, e);
}
