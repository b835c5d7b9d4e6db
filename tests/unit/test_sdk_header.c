/* The SDK header: compiles alone as strict C99 and as C++11, and its ABI fingerprint (a hash of
 * plugin.h with comments and whitespace stripped) matches the pin in abi_fingerprint.txt, so a
 * change to the header without an ABI bump fails here. */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <compass/plugin.h>

#define HEADER COMPASS_SOURCE_DIR "/sdk/compass/plugin.h"

static int have(const char *tool)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
    return system(cmd) == 0;
}

static void compiles(const char *cmd)
{
    char full[1024], log[512] = "";
    snprintf(full, sizeof(full), "%s " HEADER " 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t n = fread(log, 1, sizeof(log) - 1, p);
    log[n] = '\0';
    int st = pclose(p);
    cr_assert_eq(st, 0, "%s failed:\n%s", full, log);
}

Test(sdk_header, compiles_alone_as_strict_c99)
{
    if (!have("gcc"))
        cr_skip_test("gcc not installed");
    compiles("gcc -std=c99 -pedantic -Wall -Wextra -Wshadow -Wstrict-prototypes -Wundef "
             "-Werror -fsyntax-only -x c");
}

Test(sdk_header, compiles_alone_as_cplusplus11)
{
    if (!have("g++"))
        cr_skip_test("g++ not installed");
    compiles("g++ -std=c++11 -pedantic -Wall -Wextra -Wshadow -Wundef -Werror -fsyntax-only "
             "-x c++");
}

/* ---- fingerprint ---- */

/* FNV-1a 64 over the text with comments and all whitespace removed (string and character
 * literals are kept as written). */
static uint64_t fingerprint(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    size_t i = 0;
    while (i < n) {
        char c = s[i];
        if (c == '/' && i + 1 < n && s[i + 1] == '*') {
            const char *end = NULL;
            for (size_t k = i + 2; k + 1 < n; k++)
                if (s[k] == '*' && s[k + 1] == '/') {
                    end = s + k + 2;
                    break;
                }
            i = end ? (size_t)(end - s) : n;
            continue;
        }
        if (c == '/' && i + 1 < n && s[i + 1] == '/') {
            while (i < n && s[i] != '\n')
                i++;
            continue;
        }
        if (c == '"' || c == '\'') {
            char q = c;
            do {
                if (s[i] == '\\' && i + 1 < n) {
                    h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
                    i++;
                }
                h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
                i++;
            } while (i < n && s[i] != q);
            if (i < n) {
                h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
                i++;
            }
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            i++;
            continue;
        }
        h = (h ^ (unsigned char)c) * 1099511628211ull;
        i++;
    }
    return h;
}

static uint64_t fp(const char *s)
{
    return fingerprint(s, strlen(s));
}

Test(sdk_header, fingerprint_ignores_comments_and_layout_but_not_tokens)
{
    cr_assert_eq(fp("int a; /* note */ int b;\n"), fp("int a;\n// other note\n  int   b;"));
    cr_assert_eq(fp("#define X 1 /* a\n multi-line comment */\n"), fp("#define X 1\n"));
    cr_assert_neq(fp("int a; int b;"), fp("int b; int a;"));
    cr_assert_neq(fp("size_t size;"), fp("int size;"));
    cr_assert_neq(fp("char *s = \"a b\";"), fp("char *s = \"ab\";"));
    cr_assert_neq(fp("#define COMPASS_ABI_MINOR 0"), fp("#define COMPASS_ABI_MINOR 1"));
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    cr_assert_not_null(buf);
    *n = fread(buf, 1, (size_t)len, f);
    buf[*n] = '\0';
    fclose(f);
    return buf;
}

Test(sdk_header, abi_fingerprint_matches_the_pin)
{
    size_t n;
    char *text = slurp(HEADER, &n);
    uint64_t h = fingerprint(text, n);
    free(text);

    size_t pn;
    char *pin = slurp(ABI_PIN_FILE, &pn);
    unsigned pmaj = 0, pmin = 0;
    char phex[32] = "";
    int got = sscanf(pin, "%u.%u %31s", &pmaj, &pmin, phex);
    free(pin);
    cr_assert_eq(got, 3, "tests/unit/abi_fingerprint.txt must read \"MAJOR.MINOR <hex>\"");

    char now[32];
    snprintf(now, sizeof(now), "%016" PRIx64, h);
    int same_version = pmaj == COMPASS_ABI_MAJOR && pmin == COMPASS_ABI_MINOR;
    int same_hash = strcmp(now, phex) == 0;
    if (same_version && same_hash)
        return;
    if (same_version)
        cr_assert_fail("sdk/compass/plugin.h changed (fingerprint %s) but its ABI is still %u.%u, "
                "pinned with %s. Plugins built against the old header may break: bump "
                "COMPASS_ABI_MINOR (appended a field, service or enum value) or "
                "COMPASS_ABI_MAJOR (removed, reordered, retyped or redefined anything), add a "
                "changelog line in plugin.h, then update tests/unit/abi_fingerprint.txt to "
                "\"<new version> <new fingerprint>\".",
                now, pmaj, pmin, phex);
    else if (COMPASS_ABI_MAJOR < pmaj ||
             (COMPASS_ABI_MAJOR == pmaj && COMPASS_ABI_MINOR < pmin))
        cr_assert_fail("plugin.h says ABI %d.%d, older than the pinned %u.%u: ABI versions never go "
                "back", COMPASS_ABI_MAJOR, COMPASS_ABI_MINOR, pmaj, pmin);
    else
        cr_assert_fail("plugin.h is now ABI %d.%d but tests/unit/abi_fingerprint.txt pins %u.%u: "
                "after checking the changelog, update the pin to \"%d.%d %s\".",
                COMPASS_ABI_MAJOR, COMPASS_ABI_MINOR, pmaj, pmin, COMPASS_ABI_MAJOR,
                COMPASS_ABI_MINOR, now);
}
