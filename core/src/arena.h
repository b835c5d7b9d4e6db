/* Request arena: bump allocation in blocks, freed all at once when the request ends. */
#ifndef COMPASS_CORE_ARENA_H
#define COMPASS_CORE_ARENA_H

#include <stddef.h>

typedef struct cps_arena cps_arena;

/** A new arena whose first block holds at least first_block bytes. NULL on OOM. */
cps_arena *cps_arena_new(size_t first_block);
/** n bytes aligned for any type, not zeroed; NULL on OOM or past the arena's cap. */
void *cps_arena_alloc(cps_arena *a, size_t n);
/** n zeroed bytes. */
void *cps_arena_calloc(cps_arena *a, size_t n);
/** A NUL-terminated copy of n bytes of s. */
char *cps_arena_strndup(cps_arena *a, const char *s, size_t n);
/** Caps the bytes the arena may hold (0: no cap). */
void cps_arena_set_cap(cps_arena *a, size_t cap);
/** Bytes handed out so far. */
size_t cps_arena_used(const cps_arena *a);
void cps_arena_free(cps_arena *a);

#endif
