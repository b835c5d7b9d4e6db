/* Loads plugin shared objects and checks their descriptors before any plugin code runs. */
#ifndef COMPASS_CORE_LOADER_H
#define COMPASS_CORE_LOADER_H

#include <compass/plugin.h>

typedef struct cps_plugin {
    char *name;
    char *path;
    void *dl;
    const compass_plugin_desc *desc;
    compass_host host;  /* this plugin's own copy of the host table */
    void *owner;        /* the engine */
    int inited;
    int refs;
} cps_plugin;

/**
 * Loads the plugin at path. expect_name (may be NULL) is the name the config uses; kind (0 for
 * any) the kind it must be. host_tmpl is copied into the plugin's own table (host_ctx set to
 * the cps_plugin, plugin_name to its name) and handed to init. On failure returns a COMPASS_E*
 * code with err->msg naming the file and the reason; nothing stays loaded.
 */
int cps_plugin_load(const char *path, const char *expect_name, int kind,
                    const compass_host *host_tmpl, void *owner, cps_plugin **out,
                    compass_err *err);
/** Looks for <dir>/<name>.so in each dir, in order, and loads the first found. */
int cps_plugin_find(const char *const *dirs, size_t n_dirs, const char *name, int kind,
                    const compass_host *host_tmpl, void *owner, cps_plugin **out,
                    compass_err *err);
/** Calls fini and unloads. */
void cps_plugin_unload(cps_plugin *p);
/** "provider", "router", "pattern" or "unknown". */
const char *cps_plugin_kind_name(int kind);

#endif
