/*
 * tiered: a task classifier that picks a model tier for each request, then ranks the
 * candidates of that tier first.
 *
 * Tiers (compass_candidate.tier): 1 premium, 2 balanced, 3 fast, 4 specialised (0 counts
 * as 2).
 *
 * Stage 1, the pre-filter (no text analysis needed):
 *   - est_prompt_tokens > long_tokens (10,000)            -> tier 1 at once;
 *   - metadata task=<t> served by a tier-4 candidate      -> tier 4 first;
 *   - est_prompt_tokens < short_tokens (500) leans to tier 3 through the token factor.
 * Stage 2, one pass over the user messages' text (at most scan_bytes of it):
 *   words, sentences, questions, numbered/bulleted list items, code punctuation and
 *   identifiers, and lexicon hits (complexity keywords such as code/debug/analyze/prove/
 *   architecture/refactor, technical terms, multi-step markers first/then/step/finally,
 *   domain words, urgency words urgent/asap/quick/now, accuracy words prove/verify/exact).
 *   These give a complexity score in 0..1 from average sentence length, question count,
 *   technical-term density, multi-step markers, domain specificity and context length;
 *   each complexity keyword then closes 40% of the remaining distance (up to half).
 * The decision matrix: five factors in 0..1, each "how much this request needs a premium
 * model", weighted (w_complexity .30, w_tokens .25, w_latency .20, w_cost .15,
 * w_accuracy .10, normalised by their sum):
 *   complexity  the stage-2 score;
 *   tokens      0..0.3 below short_tokens, log-scaled to 1 at long_tokens;
 *   latency     0.5; urgency words 0.15; streaming 0.4; metadata latency=realtime 0,
 *               interactive 0.3, batch 1;
 *   cost        0.5; metadata budget=low 0, medium 0.5, high/unlimited 1, or a number of
 *               USD for this request, log-scaled 0.0005 -> 0 .. 0.1 -> 1;
 *   accuracy    0.4 plus 0.15 per accuracy word (max 0.7); metadata accuracy=critical 1
 *               (and never below tier 2), high 0.8, normal 0.5, exploratory 0.
 * A factor the caller states in metadata counts double (its weight is doubled before the
 * normalisation): an explicit requirement outweighs an inferred one.
 * score >= tier1_at -> tier 1; >= tier2_at -> tier 2; else tier 3.
 *
 * Ranking: breaker class first (as every router), then the chosen tier, then neighbouring
 * tiers by distance (on a tie, the side the score leans to), non-matching tier-4 candidates
 * last; within a tier the cheapest estimated cost for this request, then the fastest.
 *
 * No allocation in rank; the lexicon is a static hash table built once.
 */
#include <compass/plugin.h>

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

#include "../common/rank_util.h"

/* ---- options ------------------------------------------------------------------------- */

typedef struct tiered_options {
    double w_complexity;
    double w_tokens;
    double w_latency;
    double w_cost;
    double w_accuracy;
    double tier1_at;
    double tier2_at;
    int64_t short_tokens;
    int64_t long_tokens;
    int64_t expected_output_tokens;
    int64_t scan_bytes;
    const char *specialties;
    int log_decisions;
} tiered_options;

#define OPT(n, t, d, f, help) {n, t, d, 0, offsetof(tiered_options, f), help}
static const compass_option tiered_option_table[] = {
    OPT("w_complexity", COMPASS_OPT_DOUBLE, "0.30", w_complexity, "weight of task complexity"),
    OPT("w_tokens", COMPASS_OPT_DOUBLE, "0.25", w_tokens, "weight of the token budget"),
    OPT("w_latency", COMPASS_OPT_DOUBLE, "0.20", w_latency, "weight of the latency requirement"),
    OPT("w_cost", COMPASS_OPT_DOUBLE, "0.15", w_cost, "weight of the cost constraint"),
    OPT("w_accuracy", COMPASS_OPT_DOUBLE, "0.10", w_accuracy,
        "weight of the accuracy requirement"),
    OPT("tier1_at", COMPASS_OPT_DOUBLE, "0.55", tier1_at, "score from which tier 1 is chosen"),
    OPT("tier2_at", COMPASS_OPT_DOUBLE, "0.40", tier2_at,
        "score from which tier 2 is chosen (below: tier 3)"),
    OPT("short_tokens", COMPASS_OPT_INT, "500", short_tokens,
        "prompts below this many tokens lean to tier 3"),
    OPT("long_tokens", COMPASS_OPT_INT, "10000", long_tokens,
        "prompts above this many tokens go to tier 1"),
    OPT("expected_output_tokens", COMPASS_OPT_INT, "256", expected_output_tokens,
        "output tokens assumed for cost ordering when the request sets no max_tokens"),
    OPT("scan_bytes", COMPASS_OPT_INT, "32768", scan_bytes,
        "at most this many bytes of user text are analysed"),
    OPT("specialties", COMPASS_OPT_STRING, "", specialties,
        "task=pattern pairs, comma-separated: a tier-4 candidate whose id contains pattern "
        "serves metadata task; a task with no pair matches tier-4 ids containing its name"),
    OPT("log_decisions", COMPASS_OPT_BOOL, "false", log_decisions,
        "log each decision (tier, score, factors) at debug level"),
    {NULL, 0, NULL, 0, 0, NULL},
};
#undef OPT

#define MAX_SPECIALTIES 32

typedef struct specialty {
    compass_str task;
    compass_str pattern;
} specialty;

typedef struct tiered_inst {
    const compass_host *h;
    double w[5]; /* complexity, tokens, latency, cost, accuracy; normalised */
    double tier1_at, tier2_at;
    int64_t short_tokens, long_tokens, expected_output, scan_bytes;
    int log_decisions;
    char *spec_text; /* owns the strings spec[] points into */
    specialty spec[MAX_SPECIALTIES];
    size_t n_spec;
} tiered_inst;

/* ---- small string helpers -------------------------------------------------------------- */

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Whether s equals the lowercase literal lit, ignoring case and surrounding blanks. */
static int str_is(compass_str s, const char *lit)
{
    size_t n = strlen(lit), i;
    while (s.len && (s.ptr[0] == ' ' || s.ptr[0] == '\t')) {
        s.ptr++;
        s.len--;
    }
    while (s.len && (s.ptr[s.len - 1] == ' ' || s.ptr[s.len - 1] == '\t'))
        s.len--;
    if (s.len != n)
        return 0;
    for (i = 0; i < n; i++)
        if (lower(s.ptr[i]) != lit[i])
            return 0;
    return 1;
}

/* Whether needle occurs in hay, ignoring ASCII case. */
static int str_contains(compass_str hay, compass_str needle)
{
    size_t i, k;
    if (needle.len == 0)
        return 0;
    if (needle.len > hay.len)
        return 0;
    for (i = 0; i + needle.len <= hay.len; i++) {
        for (k = 0; k < needle.len; k++)
            if (lower(hay.ptr[i + k]) != lower(needle.ptr[k]))
                break;
        if (k == needle.len)
            return 1;
    }
    return 0;
}

static compass_str trim(compass_str s)
{
    while (s.len && (s.ptr[0] == ' ' || s.ptr[0] == '\t'))
        s.ptr++, s.len--;
    while (s.len && (s.ptr[s.len - 1] == ' ' || s.ptr[s.len - 1] == '\t'))
        s.len--;
    return s;
}

static double clamp01(double v)
{
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

/* ---- the lexicon ----------------------------------------------------------------------- */

enum {
    CAT_COMPLEX = 1 << 0,  /* the task is hard: code, debug, analyze, prove, ... */
    CAT_TECH = 1 << 1,     /* technical term */
    CAT_STEP = 1 << 2,     /* multi-step marker */
    CAT_DOMAIN = 1 << 3,   /* specialist domain */
    CAT_URGENT = 1 << 4,   /* latency matters */
    CAT_ACCURACY = 1 << 5, /* correctness matters */
    CAT_SIMPLE = 1 << 6    /* chit-chat */
};

typedef struct lex_entry {
    const char *word;
    unsigned cats;
} lex_entry;

#define CX CAT_COMPLEX
#define TE CAT_TECH
#define ST CAT_STEP
#define DO CAT_DOMAIN
#define UR CAT_URGENT
#define AC CAT_ACCURACY
#define SI CAT_SIMPLE
static const lex_entry lexicon[] = {
    /* complexity keywords */
    {"code", CX | TE}, {"coding", CX | TE}, {"debug", CX | TE}, {"debugging", CX | TE},
    {"analyze", CX}, {"analyse", CX}, {"analysis", CX}, {"analyzing", CX}, {"analysing", CX},
    {"prove", CX | AC}, {"proof", CX | AC}, {"architecture", CX | TE}, {"refactor", CX | TE},
    {"refactoring", CX | TE}, {"optimize", CX}, {"optimise", CX}, {"optimization", CX},
    {"optimisation", CX}, {"algorithm", CX | TE}, {"implement", CX | TE},
    {"implementation", CX | TE}, {"design", CX}, {"derive", CX | AC}, {"derivation", CX},
    {"theorem", CX | TE}, {"evaluate", CX}, {"compare", CX}, {"comparison", CX},
    {"tradeoff", CX}, {"tradeoffs", CX}, {"investigate", CX}, {"diagnose", CX},
    {"benchmark", CX | TE}, {"migrate", CX}, {"migration", CX}, {"reasoning", CX},
    {"rigorous", CX | AC}, {"formal", CX}, {"formally", CX | AC}, {"complexity", CX | TE},
    {"concurrency", CX | TE}, {"concurrent", CX | TE}, {"scalability", CX | TE},
    {"distributed", CX | TE}, {"strategy", CX}, {"critique", CX}, {"synthesize", CX},
    {"synthesise", CX}, {"evaluation", CX}, {"justify", CX}, {"simulate", CX},
    {"model", TE}, {"modeling", CX}, {"modelling", CX}, {"plan", CX}, {"solve", CX},
    /* technical terms */
    {"function", TE}, {"class", TE}, {"api", TE}, {"database", TE}, {"sql", TE},
    {"query", TE}, {"kernel", TE}, {"compiler", TE}, {"thread", TE}, {"mutex", TE},
    {"latency", TE}, {"throughput", TE}, {"regression", TE}, {"gradient", TE},
    {"matrix", TE}, {"tensor", TE}, {"integral", TE}, {"derivative", TE}, {"equation", TE},
    {"lemma", TE | AC}, {"protocol", TE}, {"encryption", TE}, {"schema", TE}, {"index", TE},
    {"cache", TE}, {"memory", TE}, {"pointer", TE}, {"recursion", TE}, {"runtime", TE},
    {"stack", TE}, {"heap", TE}, {"async", TE}, {"deployment", TE}, {"kubernetes", TE},
    {"docker", TE}, {"microservice", TE}, {"http", TE}, {"tcp", TE}, {"json", TE},
    {"python", TE}, {"rust", TE}, {"javascript", TE}, {"typescript", TE}, {"java", TE},
    {"golang", TE}, {"variable", TE}, {"parameter", TE}, {"neural", TE},
    {"statistical", TE}, {"hypothesis", TE}, {"variance", TE}, {"eigenvalue", TE},
    {"polynomial", TE}, {"asymptotic", TE}, {"invariant", TE | AC}, {"bayesian", TE},
    {"probability", TE}, {"vector", TE}, {"dataset", TE}, {"pipeline", TE}, {"network", TE},
    {"server", TE}, {"client", TE}, {"consistency", TE}, {"transaction", TE},
    {"eviction", TE}, {"replication", TE}, {"consensus", TE}, {"sharding", TE},
    {"partition", TE}, {"bytecode", TE}, {"syntax", TE}, {"exception", TE}, {"stacktrace", TE},
    {"segfault", TE | CX}, {"bug", TE | CX}, {"error", TE}, {"compile", TE}, {"library", TE},
    {"framework", TE}, {"interface", TE}, {"endpoint", TE}, {"regex", TE}, {"lock", TE},
    {"race", TE}, {"deadlock", TE | CX}, {"allocator", TE}, {"buffer", TE}, {"socket", TE},
    {"graph", TE}, {"tree", TE}, {"hash", TE}, {"queue", TE}, {"integer", TE},
    {"calculus", TE}, {"topology", TE}, {"entropy", TE}, {"estimator", TE},
    /* multi-step markers */
    {"first", ST}, {"firstly", ST}, {"then", ST}, {"next", ST}, {"finally", ST}, {"step", ST},
    {"steps", ST}, {"afterwards", ST}, {"second", ST}, {"secondly", ST}, {"third", ST},
    {"thirdly", ST}, {"lastly", ST}, {"subsequently", ST}, {"stage", ST}, {"phase", ST},
    /* specialist domains */
    {"legal", DO}, {"contract", DO}, {"statute", DO}, {"clause", DO}, {"liability", DO},
    {"litigation", DO}, {"jurisdiction", DO}, {"medical", DO}, {"clinical", DO},
    {"diagnosis", DO}, {"patient", DO}, {"dosage", DO}, {"pharmacology", DO},
    {"symptoms", DO}, {"financial", DO}, {"tax", DO}, {"accounting", DO}, {"audit", DO},
    {"regulatory", DO}, {"compliance", DO}, {"genomic", DO}, {"protein", DO},
    {"molecular", DO}, {"quantum", DO | TE}, {"actuarial", DO}, {"derivatives", DO},
    {"securities", DO}, {"forensic", DO}, {"epidemiology", DO}, {"thermodynamics", DO | TE},
    /* urgency */
    {"urgent", UR}, {"urgently", UR}, {"asap", UR}, {"quick", UR}, {"quickly", UR},
    {"now", UR}, {"immediately", UR}, {"hurry", UR}, {"fast", UR}, {"realtime", UR},
    /* accuracy */
    {"verify", AC}, {"exact", AC}, {"exactly", AC}, {"precise", AC}, {"precisely", AC},
    {"rigorously", AC}, {"correctness", AC}, {"guarantee", AC}, {"accurate", AC},
    {"accurately", AC}, {"critical", AC}, {"audited", AC},
    /* chit-chat */
    {"hi", SI}, {"hello", SI}, {"hey", SI}, {"thanks", SI}, {"thank", SI}, {"ok", SI},
    {"okay", SI}, {"bye", SI}, {"greetings", SI}, {"morning", SI}, {"cheers", SI},
};
#undef CX
#undef TE
#undef ST
#undef DO
#undef UR
#undef AC
#undef SI

#define LEX_SLOTS 1024 /* power of two, > 3x the lexicon */
#define LEX_MAXLEN 15

typedef struct lex_slot {
    uint32_t hash;
    uint8_t len;
    uint8_t cats;
    char word[LEX_MAXLEN + 1];
} lex_slot;

static lex_slot lex_table[LEX_SLOTS];
static pthread_once_t lex_once = PTHREAD_ONCE_INIT;

#define FNV_BASIS 2166136261u
#define FNV_PRIME 16777619u

static uint32_t fnv(const char *s, size_t n)
{
    uint32_t h = FNV_BASIS;
    size_t i;
    for (i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * FNV_PRIME;
    return h;
}

static void lex_build(void)
{
    size_t i;
    for (i = 0; i < sizeof(lexicon) / sizeof(lexicon[0]); i++) {
        size_t n = strlen(lexicon[i].word);
        uint32_t h = fnv(lexicon[i].word, n), k = h & (LEX_SLOTS - 1);
        if (n > LEX_MAXLEN)
            continue;
        while (lex_table[k].len && !(lex_table[k].len == n &&
                                     memcmp(lex_table[k].word, lexicon[i].word, n) == 0))
            k = (k + 1) & (LEX_SLOTS - 1);
        lex_table[k].hash = h;
        lex_table[k].len = (uint8_t)n;
        lex_table[k].cats |= (uint8_t)lexicon[i].cats;
        memcpy(lex_table[k].word, lexicon[i].word, n);
    }
}

/* The categories of the lowercase word w (n bytes) whose FNV-1a hash is h; 0 if unknown. */
static unsigned lex_find(const char *w, size_t n, uint32_t h)
{
    uint32_t k = h & (LEX_SLOTS - 1);
    while (lex_table[k].len) {
        if (lex_table[k].hash == h && lex_table[k].len == n &&
            memcmp(lex_table[k].word, w, n) == 0)
            return lex_table[k].cats;
        k = (k + 1) & (LEX_SLOTS - 1);
    }
    return 0;
}

/* Looks w up as is, then without a plural, -ed, -ing or -ly ending ("proves", "proved",
 * "debugged", "analyzing" -> "analyze", "debugging" -> "debug"). w is scratch space. */
static unsigned lex_lookup(char *w, size_t n, uint32_t h)
{
    unsigned c;
    if (n == 0 || n > LEX_MAXLEN + 3)
        return 0;
    if (n <= LEX_MAXLEN && (c = lex_find(w, n, h)) != 0)
        return c;
    if (n > 3 && w[n - 1] == 's' && w[n - 2] != 's' && n - 1 <= LEX_MAXLEN) {
        if ((c = lex_find(w, n - 1, fnv(w, n - 1))) != 0)
            return c;
        if (n > 4 && w[n - 2] == 'e' && (c = lex_find(w, n - 2, fnv(w, n - 2))) != 0)
            return c;
    }
    if (n > 4 && w[n - 2] == 'e' && w[n - 1] == 'd') {
        if (n - 1 <= LEX_MAXLEN && (c = lex_find(w, n - 1, fnv(w, n - 1))) != 0)
            return c; /* proved -> prove */
        if (n - 2 <= LEX_MAXLEN && (c = lex_find(w, n - 2, fnv(w, n - 2))) != 0)
            return c; /* compared -> compar (no); listed -> list */
        if (n > 5 && w[n - 3] == w[n - 4] && n - 3 <= LEX_MAXLEN &&
            (c = lex_find(w, n - 3, fnv(w, n - 3))) != 0)
            return c; /* debugged -> debug */
    }
    if (n > 5 && w[n - 3] == 'i' && w[n - 2] == 'n' && w[n - 1] == 'g') {
        char save = w[n - 3];
        if (n - 3 <= LEX_MAXLEN && (c = lex_find(w, n - 3, fnv(w, n - 3))) != 0)
            return c; /* optimizing -> optimiz (no); designing -> design */
        w[n - 3] = 'e';
        c = n - 2 <= LEX_MAXLEN ? lex_find(w, n - 2, fnv(w, n - 2)) : 0;
        w[n - 3] = save;
        if (c)
            return c; /* proving -> prove */
        if (n > 6 && w[n - 4] == w[n - 5] && n - 4 <= LEX_MAXLEN &&
            (c = lex_find(w, n - 4, fnv(w, n - 4))) != 0)
            return c; /* debugging -> debug */
    }
    if (n > 4 && w[n - 2] == 'l' && w[n - 1] == 'y' && n - 2 <= LEX_MAXLEN &&
        (c = lex_find(w, n - 2, fnv(w, n - 2))) != 0)
        return c;
    return 0;
}

/* ---- stage 2: text features ------------------------------------------------------------ */

typedef struct text_stats {
    size_t bytes, words, sentences, questions;
    size_t list_items;   /* numbered or bulleted lines */
    size_t code_punct;   /* { } ; = < > [ ] ( ) */
    size_t identifiers;  /* snake_case / camelCase / dotted.names */
    size_t complex_hits, tech_hits, step_hits, domain_hits, urgent_hits, accuracy_hits;
    size_t simple_hits;
} text_stats;

#define WORD_MAX 24

/* Bytes that make up words: ASCII letters and digits, and every byte of a UTF-8 sequence. */
#define WC16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const unsigned char word_char[256] = {
    WC16(0), WC16(0), WC16(0),
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,    /* 0-9 */
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,    /* @ A-O */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,    /* P-Z */
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,    /* ` a-o */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,    /* p-z */
    WC16(1), WC16(1), WC16(1), WC16(1), WC16(1), WC16(1), WC16(1), WC16(1),
};
#undef WC16

static void word_end(text_stats *t, char *w, size_t n, uint32_t h, int ident)
{
    unsigned c;
    t->words++;
    if (ident) {
        t->identifiers++;
        return;
    }
    c = lex_lookup(w, n, h);
    if (!c)
        return;
    t->complex_hits += (c & CAT_COMPLEX) != 0;
    t->tech_hits += (c & CAT_TECH) != 0;
    t->step_hits += (c & CAT_STEP) != 0;
    t->domain_hits += (c & CAT_DOMAIN) != 0;
    t->urgent_hits += (c & CAT_URGENT) != 0;
    t->accuracy_hits += (c & CAT_ACCURACY) != 0;
    t->simple_hits += (c & CAT_SIMPLE) != 0;
}

/* One pass over s, adding to t; stops after budget bytes. Returns the bytes consumed. */
static size_t scan_text(text_stats *t, compass_str s, size_t budget)
{
    char w[WORD_MAX];
    size_t i, n = s.len < budget ? s.len : budget, wl = 0, in_sentence = 0;
    uint32_t h = FNV_BASIS;
    int ident = 0, line_start = 1, digits_only = 1, first_on_line = 0;
    char prev = ' ';

    for (i = 0; i < n; i++) {
        char ch = s.ptr[i];
        int alnum = word_char[(unsigned char)ch];
        if (alnum || (ch == '_' && wl)) {
            char lc = lower(ch);
            if (wl == 0) {
                h = FNV_BASIS;
                ident = 0;
                digits_only = 1;
                first_on_line = line_start;
            }
            if (ch == '_' || (ch >= 'A' && ch <= 'Z' && prev >= 'a' && prev <= 'z'))
                ident = 1;
            if (!(ch >= '0' && ch <= '9'))
                digits_only = 0;
            if (wl < WORD_MAX)
                w[wl] = lc;
            h = (h ^ (uint8_t)lc) * FNV_PRIME;
            wl++;
            line_start = 0;
            prev = ch;
            continue;
        }
        if (wl) {
            int listed = 0;
            /* "1." or "2)" opening a line is a numbered list item */
            if (digits_only && first_on_line && (ch == '.' || ch == ')'))
                listed = 1;
            else if (ch == '.' && i + 1 < n && ((s.ptr[i + 1] >= 'a' && s.ptr[i + 1] <= 'z') ||
                                                s.ptr[i + 1] == '_'))
                ident = 1; /* dotted.name */
            if (!digits_only)
                word_end(t, w, wl <= WORD_MAX ? wl : WORD_MAX + 1, h, ident);
            else
                t->words++;
            wl = 0;
            if (listed) {
                t->list_items++;
                prev = ch;
                continue;
            }
            in_sentence++;
        }
        switch (ch) {
        case '?':
            t->questions++;
            /* fall through */
        case '!':
            if (in_sentence) {
                t->sentences++;
                in_sentence = 0;
            }
            break;
        case '.':
            if (in_sentence && (i + 1 == n || s.ptr[i + 1] == ' ' || s.ptr[i + 1] == '\n' ||
                                s.ptr[i + 1] == '\t' || s.ptr[i + 1] == '\r')) {
                t->sentences++;
                in_sentence = 0;
            }
            break;
        case '\n':
            line_start = 1;
            break;
        case '-':
        case '*':
            if (line_start && i + 1 < n && s.ptr[i + 1] == ' ')
                t->list_items++;
            break;
        case '{': case '}': case ';': case '=': case '<': case '>': case '[': case ']':
        case '(': case ')': case '`':
            t->code_punct++;
            break;
        default:
            break;
        }
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')
            line_start = 0;
        prev = ch;
    }
    if (wl) {
        if (!digits_only)
            word_end(t, w, wl <= WORD_MAX ? wl : WORD_MAX + 1, h, ident);
        else
            t->words++;
        in_sentence++;
    }
    if (in_sentence)
        t->sentences++;
    t->bytes += n;
    return n;
}

/*
 * The complexity score in 0..1. Stage 2 weighs sentence structure (average sentence length,
 * questions), technical-term density (lexicon terms, identifiers, code punctuation),
 * multi-step markers (first/then/step/finally, numbered and bulleted lists), domain
 * specificity and context length. Stage 1's keywords (code, debug, analyze, prove,
 * architecture, refactor, ...) then push the score up: each one closes 40% of the
 * remaining distance to a cap of half the headroom.
 */
static double complexity_of(const text_stats *t)
{
    double words = (double)t->words, sentences = t->sentences ? (double)t->sentences : 1.0;
    double avg = words / sentences;
    double f_len = clamp01((avg - 8.0) / 17.0);
    double f_q = clamp01((double)t->questions / 3.0);
    double tech = words > 0 ? ((double)t->tech_hits + (double)t->identifiers) / words : 0;
    double code = t->bytes ? (double)t->code_punct / (double)t->bytes : 0;
    double f_tech = clamp01(tech / 0.08);
    double f_code = clamp01(code / 0.03);
    double f_steps = clamp01(((double)t->step_hits + 1.5 * (double)t->list_items) / 6.0);
    double f_domain = clamp01((double)t->domain_hits / 4.0);
    double f_ctx = words > 20 ? clamp01(log(words / 20.0) / log(100.0)) : 0.0;
    double k = (double)(t->complex_hits < 8 ? t->complex_hits : 8);
    double push = 0.5 * (1.0 - pow(0.6, k));
    double c;

    if (f_code > f_tech)
        f_tech = f_code;
    c = 0.15 * f_len + 0.05 * f_q + 0.30 * f_tech + 0.20 * f_steps + 0.10 * f_domain +
        0.20 * f_ctx;
    c += (1.0 - c) * push;
    /* pure chit-chat ("hi there!", "thanks") */
    if (t->simple_hits && t->words <= 6 && !t->complex_hits && !t->tech_hits)
        c *= 0.5;
    return clamp01(c);
}

/* ---- the decision ------------------------------------------------------------------------ */

enum { F_COMPLEXITY, F_TOKENS, F_LATENCY, F_COST, F_ACCURACY, N_FACTORS };

typedef struct decision {
    int tier;          /* 1..4 */
    int matrix_tier;   /* 1..3: the matrix's answer (the fallback when tier is 4) */
    int lean_up;       /* between equidistant neighbours, prefer the more capable one */
    double score;
    double f[N_FACTORS];
    compass_str task;  /* metadata task, when tier 4 */
    const char *why;
} decision;

static double token_factor(const tiered_inst *p, int64_t t)
{
    double s = (double)(p->short_tokens > 0 ? p->short_tokens : 1);
    double l = (double)(p->long_tokens > p->short_tokens ? p->long_tokens : p->short_tokens + 1);
    if (t <= 0)
        return 0;
    if ((double)t < s)
        return 0.3 * (double)t / s;
    if ((double)t >= l)
        return 1.0;
    return 0.3 + 0.7 * log((double)t / s) / log(l / s);
}

static double budget_factor(compass_str v)
{
    char buf[32];
    char *end;
    double usd;
    if (str_is(v, "low") || str_is(v, "cheap") || str_is(v, "minimal"))
        return 0.0;
    if (str_is(v, "medium") || str_is(v, "normal"))
        return 0.5;
    if (str_is(v, "high") || str_is(v, "unlimited"))
        return 1.0;
    v = trim(v);
    if (v.len == 0 || v.len >= sizeof(buf))
        return -1;
    memcpy(buf, v.ptr, v.len);
    buf[v.len] = '\0';
    usd = strtod(buf, &end);
    if (end == buf || *end != '\0' || !(usd >= 0) || !isfinite(usd))
        return -1;
    if (usd <= 0.0005)
        return 0.0;
    return clamp01(log10(usd / 0.0005) / log10(200.0));
}

/* Whether c is a tier-4 candidate serving task. */
static int serves(const tiered_inst *p, const compass_candidate *c, compass_str task)
{
    size_t i;
    int mapped = 0;
    if (c->tier != 4 || task.len == 0)
        return 0;
    for (i = 0; i < p->n_spec; i++) {
        if (p->spec[i].task.len == task.len && str_contains(p->spec[i].task, task)) {
            mapped = 1;
            if (str_contains(c->id, p->spec[i].pattern) ||
                str_contains(c->model, p->spec[i].pattern))
                return 1;
        }
    }
    if (mapped)
        return 0;
    return str_contains(c->id, task) || str_contains(c->model, task) ||
           str_contains(c->provider, task);
}

static void decide(const tiered_inst *p, const compass_route_request *rr,
                   const compass_candidate *const *cands, const size_t *order, size_t m,
                   decision *d)
{
    const compass_header *md = rr->metadata;
    size_t nm = md ? rr->n_metadata : 0, i;
    compass_str lat = compass_header_get(md, nm, "latency");
    compass_str bud = compass_header_get(md, nm, "budget");
    compass_str acc = compass_header_get(md, nm, "accuracy");
    text_stats t;
    double sum = 0, wsum = 0, b;
    int critical = 0, stated[N_FACTORS] = {0};

    memset(d, 0, sizeof(*d));
    d->task = trim(compass_header_get(md, nm, "task"));

    /* Stage 1: the task names a specialty a candidate serves. */
    if (d->task.len) {
        for (i = 0; i < m; i++)
            if (serves(p, cands[order[i]], d->task)) {
                d->tier = 4;
                break;
            }
    }

    /* Stage 1: a prompt too big for anything but a premium model. */
    if (rr->est_prompt_tokens > p->long_tokens) {
        d->matrix_tier = 1;
        d->lean_up = 1;
        d->score = 1;
        d->f[F_TOKENS] = 1;
        d->why = "long prompt";
        if (!d->tier)
            d->tier = 1;
        return;
    }

    /* Stage 2: the user's text. */
    memset(&t, 0, sizeof(t));
    if (rr->chat && rr->chat->messages) {
        size_t budget = p->scan_bytes > 0 ? (size_t)p->scan_bytes : 0;
        for (i = 0; i < rr->chat->n_messages && budget; i++) {
            const compass_message *msg = &rr->chat->messages[i];
            if (msg->role == COMPASS_ROLE_USER && msg->content.len)
                budget -= scan_text(&t, msg->content, budget);
        }
    }

    d->f[F_COMPLEXITY] = complexity_of(&t);
    d->f[F_TOKENS] = token_factor(p, rr->est_prompt_tokens);

    d->f[F_LATENCY] = 0.5;
    if (rr->stream)
        d->f[F_LATENCY] = 0.4;
    if (t.urgent_hits)
        d->f[F_LATENCY] = 0.15;
    stated[F_LATENCY] = 1;
    if (str_is(lat, "realtime") || str_is(lat, "real-time") || str_is(lat, "low"))
        d->f[F_LATENCY] = 0.0;
    else if (str_is(lat, "interactive"))
        d->f[F_LATENCY] = 0.3;
    else if (str_is(lat, "batch") || str_is(lat, "relaxed"))
        d->f[F_LATENCY] = 1.0;
    else
        stated[F_LATENCY] = 0;

    d->f[F_COST] = 0.5;
    if (bud.len && (b = budget_factor(bud)) >= 0) {
        d->f[F_COST] = b;
        stated[F_COST] = 1;
    }

    d->f[F_ACCURACY] = 0.4 + 0.15 * (double)(t.accuracy_hits < 2 ? t.accuracy_hits : 2);
    stated[F_ACCURACY] = 1;
    if (str_is(acc, "critical")) {
        d->f[F_ACCURACY] = 1.0;
        critical = 1;
    } else if (str_is(acc, "high")) {
        d->f[F_ACCURACY] = 0.8;
    } else if (str_is(acc, "normal")) {
        d->f[F_ACCURACY] = 0.5;
    } else if (str_is(acc, "exploratory") || str_is(acc, "low")) {
        d->f[F_ACCURACY] = 0.0;
    } else {
        stated[F_ACCURACY] = 0;
    }

    /* What the caller states outright counts double against what is inferred. */
    for (i = 0; i < N_FACTORS; i++) {
        double w = p->w[i] * (stated[i] ? 2.0 : 1.0);
        sum += w * d->f[i];
        wsum += w;
    }
    d->score = wsum > 0 ? sum / wsum : 0.5;
    if (d->score >= p->tier1_at) {
        d->matrix_tier = 1;
        d->lean_up = 1;
    } else if (d->score >= p->tier2_at) {
        d->matrix_tier = 2;
        d->lean_up = d->score >= (p->tier1_at + p->tier2_at) / 2;
    } else {
        d->matrix_tier = 3;
        d->lean_up = 1;
    }
    d->why = "matrix";
    if (critical && d->matrix_tier > 2) {
        d->matrix_tier = 2;
        d->lean_up = 1;
        d->why = "accuracy critical";
    }
    if (!d->tier)
        d->tier = d->matrix_tier;
}

/* ---- ranking ------------------------------------------------------------------------------ */

typedef struct tiered_ctx {
    const tiered_inst *p;
    const compass_route_request *rr;
    const compass_candidate *const *c;
    const decision *d;
    int64_t out;
} tiered_ctx;

/* How far candidate c's tier is from the decision: 0 for the chosen tier. */
static int tier_rank(const tiered_ctx *x, const compass_candidate *c)
{
    const decision *d = x->d;
    int tier = c->tier >= 1 && c->tier <= 4 ? c->tier : 2, base = 0, want = d->tier, dist;
    if (d->tier == 4) {
        if (serves(x->p, c, d->task))
            return 0;
        base = 1;
        want = d->matrix_tier;
    }
    if (tier == 4)
        return base + 20; /* a specialist for something else: last resort */
    dist = tier > want ? tier - want : want - tier;
    /* equidistant neighbours: the side the score leans to first */
    return base + 2 * dist + (dist && ((tier < want) != d->lean_up));
}

static double tiered_latency(const tiered_ctx *x, size_t i)
{
    double v = rk_latency(x->rr, x->c[i]);
    return v > 0 ? v : 1e300;
}

static int tiered_cmp(const void *vctx, size_t a, size_t b)
{
    const tiered_ctx *x = (const tiered_ctx *)vctx;
    const compass_candidate *ca = x->c[a], *cb = x->c[b];
    int d = rk_health(ca) - rk_health(cb);
    if (d)
        return d;
    d = tier_rank(x, ca) - tier_rank(x, cb);
    if (d)
        return d;
    d = rk_cmp_double(rk_est_cost(x->rr, ca, x->out), rk_est_cost(x->rr, cb, x->out));
    if (d)
        return d;
    return rk_cmp_double(tiered_latency(x, a), tiered_latency(x, b));
}

/* Sort keys computed once per candidate, for routes of up to KEYED_MAX candidates. */
#define KEYED_MAX 64

typedef struct tiered_key {
    int rank; /* breaker class x 100 + tier_rank */
    double cost;
    double latency;
} tiered_key;

static int tiered_key_cmp(const void *vkeys, size_t a, size_t b)
{
    const tiered_key *k = (const tiered_key *)vkeys;
    int d = k[a].rank - k[b].rank;
    if (d)
        return d;
    d = rk_cmp_double(k[a].cost, k[b].cost);
    if (d)
        return d;
    return rk_cmp_double(k[a].latency, k[b].latency);
}

static int tiered_rank(void *inst, compass_req *req, const compass_route_request *rr,
                       const compass_candidate *const *cands, size_t n, size_t *order,
                       size_t *n_order, compass_err *err)
{
    tiered_inst *p = (tiered_inst *)inst;
    tiered_ctx x;
    decision d;
    size_t m;
    int rc;
    (void)req;
    if (!p)
        return compass_err_set(err, COMPASS_EINVAL, "tiered: NULL instance");
    rc = rk_filter("tiered", rr, cands, n, order, n_order, &m, err);
    if (rc)
        return rc;
    decide(p, rr, cands, order, m, &d);
    x.p = p;
    x.rr = rr;
    x.c = cands;
    x.d = &d;
    x.out = rk_expected_output(rr, p->expected_output);
    if (n <= KEYED_MAX) {
        tiered_key keys[KEYED_MAX];
        size_t i;
        for (i = 0; i < m; i++) {
            size_t k = order[i];
            keys[k].rank = 100 * rk_health(cands[k]) + tier_rank(&x, cands[k]);
            keys[k].cost = rk_est_cost(rr, cands[k], x.out);
            keys[k].latency = tiered_latency(&x, k);
        }
        rk_sort(order, m, tiered_key_cmp, keys);
    } else {
        rk_sort(order, m, tiered_cmp, &x);
    }
    if (p->log_decisions && p->h->log) {
        compass_str top = cands[order[0]]->id;
        p->h->log(p->h, COMPASS_LOG_DEBUG,
                  "tiered: route \"%.*s\" tier=%d (%s) score=%.3f complexity=%.3f tokens=%.3f "
                  "latency=%.3f cost=%.3f accuracy=%.3f first=%.*s",
                  (int)(rr->route.len > 64 ? 64 : rr->route.len),
                  rr->route.ptr ? rr->route.ptr : "", d.tier, d.why ? d.why : "", d.score,
                  d.f[F_COMPLEXITY], d.f[F_TOKENS], d.f[F_LATENCY], d.f[F_COST],
                  d.f[F_ACCURACY], (int)(top.len > 128 ? 128 : top.len), top.ptr ? top.ptr : "");
    }
    return rk_done(n_order, m);
}

/* ---- instances ---------------------------------------------------------------------------- */

/* Parses "task=pattern, task=pattern" (kept in p->spec_text). */
static int parse_specialties(tiered_inst *p, const char *text, compass_err *err)
{
    size_t len = text ? strlen(text) : 0, i = 0;
    if (len == 0)
        return COMPASS_OK;
    p->spec_text = (char *)p->h->alloc(p->h, len + 1);
    if (!p->spec_text)
        return compass_err_set(err, COMPASS_ENOMEM, "tiered: out of memory");
    memcpy(p->spec_text, text, len + 1);
    while (i < len) {
        size_t start = i, eq = (size_t)-1;
        compass_str task, pat;
        while (i < len && p->spec_text[i] != ',' && p->spec_text[i] != ';') {
            if (p->spec_text[i] == '=' && eq == (size_t)-1)
                eq = i;
            i++;
        }
        if (eq == (size_t)-1) {
            if (trim((compass_str){p->spec_text + start, i - start}).len == 0) {
                i++;
                continue;
            }
            return compass_err_set(err, COMPASS_ECONFIG,
                                   "tiered: option specialties: expected task=pattern pairs "
                                   "separated by commas");
        }
        task = trim((compass_str){p->spec_text + start, eq - start});
        pat = trim((compass_str){p->spec_text + eq + 1, i - eq - 1});
        if (!task.len || !pat.len)
            return compass_err_set(err, COMPASS_ECONFIG,
                                   "tiered: option specialties: empty task or pattern");
        if (p->n_spec == MAX_SPECIALTIES)
            return compass_err_set(err, COMPASS_ECONFIG,
                                   "tiered: option specialties: more than 32 pairs");
        p->spec[p->n_spec].task = task;
        p->spec[p->n_spec].pattern = pat;
        p->n_spec++;
        i++;
    }
    return COMPASS_OK;
}

static void tiered_free(void *inst)
{
    tiered_inst *p = (tiered_inst *)inst;
    if (!p)
        return;
    if (p->spec_text)
        p->h->free(p->h, p->spec_text);
    p->h->free(p->h, p);
}

static int tiered_new(const compass_host *h, const compass_instance_info *info, void **inst,
                      compass_err *err)
{
    static const tiered_options defaults = {0.30, 0.25, 0.20, 0.15, 0.10, 0.55, 0.40,
                                            500,  10000, 256, 32768, NULL, 0};
    const tiered_options *o = info && info->options ? (const tiered_options *)info->options
                                                    : &defaults;
    tiered_inst *p;
    double w[5] = {o->w_complexity, o->w_tokens, o->w_latency, o->w_cost, o->w_accuracy};
    double wsum = 0;
    int i, rc;

    if (!h || !inst)
        return compass_err_set(err, COMPASS_EINVAL, "tiered: NULL argument");
    for (i = 0; i < 5; i++) {
        if (!(w[i] >= 0) || !isfinite(w[i]))
            return compass_err_set(err, COMPASS_ECONFIG,
                                   "tiered: weights w_* must be finite and not negative");
        wsum += w[i];
    }
    if (wsum <= 0)
        return compass_err_set(err, COMPASS_ECONFIG, "tiered: the weights w_* sum to 0");
    if (!(o->tier2_at >= 0 && o->tier2_at <= o->tier1_at && o->tier1_at <= 1))
        return compass_err_set(err, COMPASS_ECONFIG,
                               "tiered: need 0 <= tier2_at <= tier1_at <= 1");
    if (o->short_tokens < 0 || o->long_tokens <= o->short_tokens)
        return compass_err_set(err, COMPASS_ECONFIG,
                               "tiered: need 0 <= short_tokens < long_tokens");
    if (o->expected_output_tokens < 0 || o->scan_bytes < 0)
        return compass_err_set(err, COMPASS_ECONFIG,
                               "tiered: expected_output_tokens and scan_bytes must not be "
                               "negative");
    pthread_once(&lex_once, lex_build);

    p = (tiered_inst *)h->alloc(h, sizeof(*p));
    if (!p)
        return compass_err_set(err, COMPASS_ENOMEM, "tiered: out of memory");
    memset(p, 0, sizeof(*p));
    p->h = h;
    for (i = 0; i < 5; i++)
        p->w[i] = w[i] / wsum;
    p->tier1_at = o->tier1_at;
    p->tier2_at = o->tier2_at;
    p->short_tokens = o->short_tokens;
    p->long_tokens = o->long_tokens;
    p->expected_output = o->expected_output_tokens;
    p->scan_bytes = o->scan_bytes;
    p->log_decisions = o->log_decisions;
    rc = parse_specialties(p, o->specialties, err);
    if (rc) {
        tiered_free(p);
        return rc;
    }
    *inst = p;
    return COMPASS_OK;
}

static const compass_router_ops tiered_ops = {
    .size = sizeof(compass_router_ops),
    .instance_new = tiered_new,
    .instance_free = tiered_free,
    .rank = tiered_rank,
};

static const compass_plugin_desc tiered_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_ROUTER,
    .name = "tiered",
    .version = "1.0.0",
    .summary = "classifies each request (complexity, tokens, latency, cost, accuracy) into "
               "a model tier and ranks that tier first",
    .options = tiered_option_table,
    .options_size = sizeof(tiered_options),
    .ops.router = &tiered_ops,
};

COMPASS_PLUGIN_DEFINE(tiered, tiered_desc)
