/* compass_strerror / compass_errname cover every COMPASS_E* code plugin.h defines. The codes
 * are read from the header's text at test time, so a new code without a name fails here. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include <compass/compass.h>

typedef struct code {
    char name[64];
    int value;
} code;

static size_t read_codes(code *out, size_t cap)
{
    FILE *f = fopen(COMPASS_SOURCE_DIR "/sdk/compass/plugin.h", "r");
    cr_assert_not_null(f, "cannot open plugin.h");
    char line[512];
    size_t n = 0;
    while (fgets(line, sizeof(line), f)) {
        char name[64];
        int v;
        if (strncmp(line, "#define COMPASS_E", 17))
            continue;
        if (sscanf(line, "#define %63s (%d)", name, &v) != 2)
            continue;
        cr_assert_lt(n, cap);
        snprintf(out[n].name, sizeof(out[n].name), "%s", name);
        out[n].value = v;
        n++;
    }
    fclose(f);
    return n;
}

Test(errors, every_code_in_plugin_h_has_its_name_and_a_text)
{
    code codes[128];
    size_t n = read_codes(codes, 128);
    cr_assert_geq(n, 15, "found only %zu COMPASS_E* codes in plugin.h", n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_lt(codes[i].value, 0, "%s must be negative", codes[i].name);
        cr_assert_str_eq(compass_errname(codes[i].value), codes[i].name,
                         "compass_errname(%d)", codes[i].value);
        const char *t = compass_strerror(codes[i].value);
        cr_assert_not_null(t);
        cr_assert_str_neq(t, "unknown error", "%s has no text", codes[i].name);
        cr_assert_neq(t[0], '\0');
    }
}

Test(errors, codes_and_texts_are_never_shared)
{
    code codes[128];
    size_t n = read_codes(codes, 128);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            cr_assert_neq(codes[i].value, codes[j].value, "%s and %s share %d", codes[i].name,
                          codes[j].name, codes[i].value);
            cr_assert_str_neq(compass_strerror(codes[i].value),
                              compass_strerror(codes[j].value), "%s and %s share a text",
                              codes[i].name, codes[j].name);
        }
}

Test(errors, common_codes_have_their_documented_names_and_texts)
{
    cr_assert_str_eq(compass_errname(COMPASS_OK), "COMPASS_OK");
    cr_assert_str_eq(compass_strerror(COMPASS_OK), "success");
    cr_assert_str_eq(compass_strerror(COMPASS_EINVAL), "invalid argument");
    cr_assert_str_eq(compass_strerror(COMPASS_EABI), "incompatible plugin ABI");
    cr_assert_str_eq(compass_strerror(COMPASS_ECONFIG), "invalid configuration");
    cr_assert_str_eq(compass_errname(COMPASS_EPLUGIN), "COMPASS_EPLUGIN");
}

Test(errors, unknown_code_reads_unknown_error)
{
    cr_assert_str_eq(compass_strerror(-9999), "unknown error");
    cr_assert_str_eq(compass_errname(-9999), "COMPASS_E?");
    cr_assert_str_eq(compass_errname(1), "COMPASS_E?");
}
