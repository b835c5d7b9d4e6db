/* Declared plugin options (compass_option tables): defaults, typed values from text. */
#ifndef COMPASS_CORE_OPTIONS_H
#define COMPASS_CORE_OPTIONS_H

#include <compass/plugin.h>

#include "arena.h"

/** The row named name, or NULL. */
const compass_option *cps_opt_find(const compass_option *tab, const char *name);
/** Number of rows before the NULL-named end row (tab may be NULL). */
size_t cps_opt_count(const compass_option *tab);
/** Parses text as o's type and writes it into base + o->offset; strings are copied into a.
 *  On a bad value returns COMPASS_ECONFIG with err naming the option and the expected type. */
int cps_opt_set_text(cps_arena *a, const compass_option *o, void *base, const char *text,
                     compass_err *err);
/** Writes every row's default (rows without one are zero/NULL). */
int cps_opt_apply_defaults(cps_arena *a, const compass_option *tab, void *base,
                           compass_err *err);
/** The type's name for messages: "string", "integer", "boolean", "number". */
const char *cps_opt_type_name(int type);

#endif
