#include "arena.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

struct block {
    struct block *next;
    size_t cap, used;
    alignas(max_align_t) unsigned char data[];
};

struct cps_arena {
    struct block *head;
    size_t used, reserved, cap;
};

#define ALIGN_UP(n) (((n) + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1))

static struct block *block_new(size_t cap)
{
    struct block *b = malloc(sizeof(*b) + cap);
    if (!b)
        return NULL;
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    return b;
}

cps_arena *cps_arena_new(size_t first_block)
{
    cps_arena *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->head = block_new(first_block ? ALIGN_UP(first_block) : 4096);
    if (!a->head) {
        free(a);
        return NULL;
    }
    a->reserved = a->head->cap;
    return a;
}

void cps_arena_set_cap(cps_arena *a, size_t cap)
{
    a->cap = cap;
}

size_t cps_arena_used(const cps_arena *a)
{
    return a->used;
}

void *cps_arena_alloc(cps_arena *a, size_t n)
{
    if (!a)
        return NULL;
    size_t need = ALIGN_UP(n ? n : 1);
    if (need < n)
        return NULL; /* overflow */
    if (a->cap && a->used + need > a->cap)
        return NULL;
    struct block *b = a->head;
    if (b->cap - b->used < need) {
        size_t cap = b->cap * 2;
        if (cap < need)
            cap = ALIGN_UP(need);
        if (cap > ((size_t)1 << 26) && need <= ((size_t)1 << 26))
            cap = (size_t)1 << 26;
        struct block *nb = block_new(cap);
        if (!nb)
            return NULL;
        nb->next = a->head;
        a->head = nb;
        a->reserved += cap;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->used += need;
    return p;
}

void *cps_arena_calloc(cps_arena *a, size_t n)
{
    void *p = cps_arena_alloc(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

char *cps_arena_strndup(cps_arena *a, const char *s, size_t n)
{
    char *p = cps_arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void cps_arena_free(cps_arena *a)
{
    if (!a)
        return;
    struct block *b = a->head;
    while (b) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}
