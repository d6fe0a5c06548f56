/*
 * cli_convert.c - `ferry convert idx|fashion-mnist`: datasets in the IDX format (MNIST,
 * Fashion-MNIST) to TFRecord shards of tf.train.Example and to image folders.
 *
 *   idx IMAGES LABELS [--tfrecord PREFIX] [--shards N] [--folder DIR] [--class-names A,B,...]
 *   fashion-mnist OUTDIR [--shards N] [--source DIR]
 *
 * How it goes:
 *   - both IDX files (gzipped or not: zlib's gzread reads either) are read whole into memory and
 *     checked (magic, counts, sizes, length, the labels against --class-names) before anything is
 *     written, so bad input leaves no output. A header's count does not size an allocation: the
 *     buffer grows with the bytes that are really there.
 *   - each image is encoded once, as an 8-bit grayscale PNG (libspng), and goes to every output.
 *   - TFRecord: shard k of N holds records [k*n/N, (k+1)*n/N) in file order, named
 *     PREFIX-00000-of-0000N as TensorFlow Datasets names them; a record is a tf.train.Example with
 *     the features image (bytes_list: the PNG) and label (int64_list), the layout of TFDS's mnist
 *     and fashion_mnist, serialized here by hand. Shards are written as NAME.tmp and renamed only
 *     when all of them are complete; on failure the .tmp files are removed.
 *   - folder: DIR/CLASS/NNNNN.png, each file written as NAME.tmp and renamed, so that a file of the
 *     folder is always a whole image. DIR, and the directory of PREFIX, are made when missing.
 *   - fashion-mnist writes OUTDIR/MANIFEST last, after the renames: the inputs (path, bytes) and
 *     the files written (name, records, bytes). A run whose MANIFEST matches the inputs, the
 *     shard count and the files as they are on disk writes nothing ("up to date").
 * Uses only the public header (and zlib and libspng), like any program on libferry. Exit status:
 * 0 success, 1 bad data or I/O failure, 2 usage error; messages in the forms of cli.h.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "cli.h"
#include "ferry.h"

#ifdef FERRY_HAVE_ZLIB
#include <zlib.h>
#endif
#ifdef FERRY_HAVE_SPNG
#include <spng.h>
#endif

#define IDX_IMAGES_MAGIC 0x00000803u /* unsigned bytes, 3 dimensions: count, rows, columns */
#define IDX_LABELS_MAGIC 0x00000801u /* unsigned bytes, 1 dimension: count */
#define MAX_SIDE 65535u              /* rows and columns of an image */
#define MAX_PIXELS (1u << 24)        /* rows x columns */
#define MAX_SHARDS 99999             /* what 5 digits of PREFIX-%05d-of-%05d hold */
#define DEFAULT_SOURCE "/usr/share/datasets/fashion-mnist"
#define FASHION_SHARDS 4
#define MANIFEST_MAX (1 << 20)

/* ---- help -------------------------------------------------------------------------------- */
static const struct subcommand {
    const char *name, *usage, *summary, *what, *options;
} subcommands[] = {
    {"idx", "IMAGES LABELS [--tfrecord PREFIX] [--shards N] [--folder DIR] [--class-names A,B,...]",
     "IDX images and labels (MNIST's format) to TFRecord shards and an image folder",
     "Converts a pair of IDX files, the format of MNIST and Fashion-MNIST, gzipped or not: IMAGES\n"
     "(magic 0x00000803: unsigned bytes; count, rows, columns) and LABELS (magic 0x00000801:\n"
     "unsigned bytes; count), with equal counts. Each image becomes an 8-bit grayscale PNG of\n"
     "columns x rows pixels. Both files are read and checked whole before anything is written (a\n"
     "bad magic, a count mismatch or a truncated file is named with its byte offset), and each\n"
     "output file is written as NAME.tmp and renamed when complete.\n"
     "e.g. ferry convert idx train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \\\n"
     "       --tfrecord out/train.tfrecord --shards 4\n",
     "options (--tfrecord, --folder or both):\n"
     "  --tfrecord PREFIX      write TFRecord shards PREFIX-00000-of-0000N ...: tf.train.Example\n"
     "                         records with the features image (bytes: the PNG) and label (int64),\n"
     "                         as TensorFlow Datasets lays out MNIST; shard k of N holds records\n"
     "                         [k*n/N, (k+1)*n/N) in file order\n"
     "  --shards N             the number of shards, 1 to 99999 (default 1)\n"
     "  --folder DIR           write DIR/CLASS/NNNNN.png: NNNNN the record's index (5 digits), CLASS\n"
     "                         its label, zero-padded to the width of the largest label (0..9,\n"
     "                         00..12), so that names sort as numbers\n"
     "  --class-names A,B,...  CLASS of label i is the i-th name instead (not empty, no '/')\n"
     "DIR and the directory of PREFIX are made when missing. Prints one line per output: the\n"
     "records, the files and their bytes.\n"},
    {"fashion-mnist", "OUTDIR [--shards N] [--source DIR]", "Fashion-MNIST to TFRecord shards, as TFDS has it",
     "Converts Fashion-MNIST (60,000 training and 10,000 test images of 28x28 pixels, labels 0..9)\n"
     "to OUTDIR/train.tfrecord-0000k-of-0000N and OUTDIR/test.tfrecord-00000-of-00001, records as\n"
     "'ferry convert idx' writes them, then writes OUTDIR/MANIFEST: the inputs, the files, their\n"
     "records and bytes. A later run that finds the inputs and the files as MANIFEST lists them\n"
     "prints 'up to date' and writes nothing.\n",
     "options:\n"
     "  --shards N    the shards of the training set, 1 to 99999 (default 4)\n"
     "  --source DIR  the directory of train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,\n"
     "                t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (or the same names\n"
     "                without .gz); default " DEFAULT_SOURCE ",\n"
     "                from Debian's package dataset-fashion-mnist\n"},
};
#define NSUB (sizeof subcommands / sizeof *subcommands)

static const char status_text[] = "exit status: 0 success, 1 bad data or I/O error, 2 usage error\n";

bool ferry_cli_convert_help(FILE *f, const char *sub) {
    if (!sub) {
        fprintf(f, "usage: ferry convert SUBCOMMAND ARGS [OPTIONS]\n\nsubcommands:\n");
        for (size_t i = 0; i < NSUB; i++)
            fprintf(f, "  %-13s %s\n  %-13s   %s\n", subcommands[i].name, subcommands[i].usage, "",
                    subcommands[i].summary);
        fprintf(f, "\n'ferry convert SUBCOMMAND --help' describes one of them.\n%s", status_text);
        return true;
    }
    for (size_t i = 0; i < NSUB; i++)
        if (strcmp(sub, subcommands[i].name) == 0) {
            fprintf(f, "usage: ferry convert %s %s\n%s\n%s%s", subcommands[i].name, subcommands[i].usage,
                    subcommands[i].what, subcommands[i].options, status_text);
            return true;
        }
    return false;
}

/* ---- small helpers ----------------------------------------------------------------------- */
/* A new string of the printf format, or NULL when out of memory. */
static char *str_printf(const char *fmt, ...) FERRY_PRINTF(1, 2);
static char *str_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* mkdir -p. Returns 0, or prints why not and returns -1. */
static int make_dirs(const char *cmd, const char *path) {
    char *p = strdup(path);
    if (!p) {
        ferry_cli_error(cmd, "out of memory");
        return -1;
    }
    int rc = 0;
    for (char *s = p + 1;; s++) {
        bool last = *s == '\0';
        if (*s != '/' && !last) continue;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            ferry_cli_error(cmd, "cannot create the directory '%s': %s", p, strerror(errno));
            rc = -1;
            break;
        }
        if (last) break;
        *s = '/';
    }
    struct stat st;
    if (rc == 0 && (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))) {
        ferry_cli_error(cmd, "'%s' is not a directory", path);
        rc = -1;
    }
    free(p);
    return rc;
}

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
}

/* ---- IDX input --------------------------------------------------------------------------- */
typedef struct idx_data {
    const char *path;
    bool gzipped;
    uint32_t dims[3]; /* count, then rows and columns of images */
    int64_t count;
    size_t item;    /* bytes of one image or label */
    uint8_t *bytes; /* count * item bytes, after the header */
    int64_t header; /* bytes of the header: 4 + 4 * dimensions */
} idx_data;

/* One IDX file being read: through zlib (which reads gzipped and plain files alike) when the
 * build has it, else through stdio (plain files only). `pos` counts uncompressed bytes. */
typedef struct idx_in {
    const char *cmd, *path;
#ifdef FERRY_HAVE_ZLIB
    gzFile gz;
#else
    FILE *f;
#endif
    int64_t pos;
} idx_in;

static int idx_open(idx_in *in) {
    int err = ferry_cli_check_readable(in->path);
    if (err) {
        ferry_cli_error(in->cmd, "%s: %s", in->path, strerror(err));
        return -1;
    }
#ifdef FERRY_HAVE_ZLIB
    in->gz = gzopen(in->path, "rb");
    if (in->gz) gzbuffer(in->gz, 256 * 1024);
    if (!in->gz) {
#else
    in->f = fopen(in->path, "rb");
    if (!in->f) {
#endif
        ferry_cli_error(in->cmd, "%s: %s", in->path, errno ? strerror(errno) : "out of memory");
        return -1;
    }
    return 0;
}

static void idx_close(idx_in *in) {
#ifdef FERRY_HAVE_ZLIB
    if (in->gz) gzclose_r(in->gz);
    in->gz = NULL;
#else
    if (in->f) fclose(in->f);
    in->f = NULL;
#endif
}

/* Whether the bytes come through gunzip (a byte offset then counts uncompressed bytes). */
static bool idx_gzipped(idx_in *in) {
#ifdef FERRY_HAVE_ZLIB
    return gzdirect(in->gz) == 0;
#else
    return false;
#endif
}

/* Reads up to n bytes; returns how many (fewer only at the end of the data), or -1 after printing
 * the reason of a read error. */
static int64_t idx_read(idx_in *in, uint8_t *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got > (1u << 30) ? (1u << 30) : n - got;
#ifdef FERRY_HAVE_ZLIB
        int k = gzread(in->gz, p + got, (unsigned)want);
        if (k < 0) {
            int zerr;
            const char *why = gzerror(in->gz, &zerr);
            ferry_cli_error(in->cmd, "%s: reading byte %" PRId64 "%s: %s", in->path, in->pos + (int64_t)got,
                            idx_gzipped(in) ? " (uncompressed)" : "", zerr == Z_ERRNO ? strerror(errno) : why);
            return -1;
        }
#else
        size_t k = fread(p + got, 1, want, in->f);
        if (k < want && ferror(in->f)) {
            ferry_cli_error(in->cmd, "%s: reading byte %" PRId64 ": %s", in->path, in->pos + (int64_t)(got + k),
                            strerror(errno));
            return -1;
        }
        if (in->pos == 0 && got == 0 && k >= 2 && p[0] == 0x1f && p[1] == 0x8b) {
            ferry_cli_error(in->cmd, "%s is gzipped, and this ferry was built without zlib: gunzip it first", in->path);
            return -1;
        }
#endif
        if (k == 0) break;
        got += (size_t)k;
    }
    in->pos += (int64_t)got;
    return (int64_t)got;
}

/* What a byte offset counts: " (uncompressed)" in a gzipped file, with a word when zlib says
 * that the compressed file is cut short. */
static const char *idx_offset_note(idx_in *in) {
#ifdef FERRY_HAVE_ZLIB
    if (!idx_gzipped(in)) return "";
    int zerr;
    gzerror(in->gz, &zerr);
    return zerr == Z_BUF_ERROR ? " (uncompressed; the gzip stream ends early)" : " (uncompressed)";
#else
    (void)in;
    return "";
#endif
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads and checks an IDX file of images (ndims 3) or labels (ndims 1): the header, then unless
 * header_only all the data, which must end where the header says. Prints why on failure. */
static int idx_load(const char *cmd, const char *path, int ndims, bool header_only, idx_data *d) {
    const char *what = ndims == 3 ? "images" : "labels";
    uint32_t magic = ndims == 3 ? IDX_IMAGES_MAGIC : IDX_LABELS_MAGIC;
    memset(d, 0, sizeof *d);
    d->path = path;
    d->header = 4 + 4 * ndims;
    idx_in in = {.cmd = cmd, .path = path};
    if (idx_open(&in)) return -1;
    int rc = -1;
    uint8_t head[16];
    int64_t got = idx_read(&in, head, (size_t)d->header);
    if (got < 0) goto done;
    d->gzipped = idx_gzipped(&in);
    if (got >= 4 && be32(head) != magic) {
        uint32_t m = be32(head);
        if (head[0] == 0 && head[1] == 0 && head[2] == 0x08 && (head[3] == 1 || head[3] == 3))
            ferry_cli_error(
                cmd, "%s: byte 0%s: magic 0x%08" PRIx32 " is an IDX file of %s, expected %s (magic 0x%08" PRIx32 ")",
                path, idx_offset_note(&in), m, head[3] == 1 ? "labels" : "images", what, magic);
        else
            ferry_cli_error(cmd,
                            "%s: byte 0%s: bad magic 0x%08" PRIx32 ": not an IDX file of %s (magic 0x%08" PRIx32 ")",
                            path, idx_offset_note(&in), m, what, magic);
        goto done;
    }
    if (got < d->header) {
        ferry_cli_error(cmd, "%s: truncated at byte %" PRId64 "%s: the IDX header of %s is %" PRId64 " bytes", path,
                        got, idx_offset_note(&in), what, d->header);
        goto done;
    }
    for (int i = 0; i < ndims; i++) d->dims[i] = be32(head + 4 + 4 * i);
    d->count = d->dims[0];
    d->item = 1;
    if (ndims == 3) {
        uint32_t rows = d->dims[1], cols = d->dims[2];
        if (rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE || (uint64_t)rows * cols > MAX_PIXELS) {
            ferry_cli_error(cmd,
                            "%s: byte 8: images of %" PRIu32 " x %" PRIu32
                            " pixels (rows x columns); each side must be "
                            "1 to %u, and the image at most %u pixels",
                            path, rows, cols, MAX_SIDE, MAX_PIXELS);
            goto done;
        }
        d->item = (size_t)rows * cols;
    }
    if (header_only) {
        rc = 0;
        goto done;
    }
    /* The buffer grows with the data read, never to a size that only the header claims. */
    size_t want = (size_t)d->count * d->item, cap = want < (1u << 20) ? want : (1u << 20), have = 0;
    d->bytes = malloc(cap ? cap : 1);
    for (;;) {
        if (!d->bytes) {
            ferry_cli_error(cmd, "%s: out of memory for %zu bytes of %s", path, cap, what);
            goto done;
        }
        got = idx_read(&in, d->bytes + have, cap - have);
        if (got < 0) goto done;
        have += (size_t)got;
        if (have < cap || cap == want) break;
        cap = cap > want / 2 ? want : cap * 2;
        uint8_t *p = realloc(d->bytes, cap);
        if (!p) free(d->bytes);
        d->bytes = p;
    }
    if (have < want) {
        ferry_cli_error(cmd,
                        "%s: truncated at byte %" PRId64 "%s: the header declares %" PRId64 " %s, which end at "
                        "byte %" PRId64 " (%s %" PRId64 " is %s)",
                        path, d->header + (int64_t)have, idx_offset_note(&in), d->count, what,
                        d->header + (int64_t)want, ndims == 3 ? "image" : "label", (int64_t)(have / d->item),
                        have % d->item ? "incomplete" : "missing");
        goto done;
    }
    uint8_t extra;
    got = idx_read(&in, &extra, 1);
    if (got < 0) goto done;
    if (got > 0) {
        ferry_cli_error(cmd, "%s: byte %" PRId64 "%s: data after the %" PRId64 " %s that the header declares", path,
                        d->header + (int64_t)want, idx_offset_note(&in), d->count, what);
        goto done;
    }
    rc = 0;
done:
    idx_close(&in);
    if (rc) {
        free(d->bytes);
        d->bytes = NULL;
    }
    return rc;
}

/* The counts of an images file and a labels file must agree. */
static int check_counts(const char *cmd, const idx_data *img, const idx_data *lab) {
    if (img->count == lab->count) return 0;
    ferry_cli_error(cmd,
                    "count mismatch: %s: byte 4: %" PRId64 " images, but %s: byte 4: %" PRId64 " labels; "
                    "each image needs its label",
                    img->path, img->count, lab->path, lab->count);
    return -1;
}

/* ---- encoding ---------------------------------------------------------------------------- */
static bool have_png_encoder(const char *cmd) {
#ifdef FERRY_HAVE_SPNG
    (void)cmd;
    return true;
#else
    ferry_cli_error(cmd, "this ferry was built without libspng, which encodes the PNG images: install it "
                         "(apt-get install libspng-dev) and rebuild ferry");
    return false;
#endif
}

/* An 8-bit grayscale PNG of w x h pixels (rows of w bytes). *png is freed with free(). Returns 0,
 * or prints why not and returns -1. */
static int png_encode(const char *cmd, const uint8_t *pixels, uint32_t w, uint32_t h, void **png, size_t *len) {
    *png = NULL;
    *len = 0;
#ifdef FERRY_HAVE_SPNG
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    if (!ctx) {
        ferry_cli_error(cmd, "out of memory for a PNG encoder");
        return -1;
    }
    struct spng_ihdr ihdr = {.width = w, .height = h, .bit_depth = 8, .color_type = SPNG_COLOR_TYPE_GRAYSCALE};
    int err = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    if (!err) err = spng_set_ihdr(ctx, &ihdr);
    if (!err) err = spng_encode_image(ctx, pixels, (size_t)w * h, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    if (!err) *png = spng_get_png_buffer(ctx, len, &err);
    spng_ctx_free(ctx);
    if (err || !*png) {
        ferry_cli_error(cmd, "encoding a PNG of %" PRIu32 " x %" PRIu32 " pixels: %s", w, h,
                        err ? spng_strerror(err) : "no output");
        free(*png);
        *png = NULL;
        return -1;
    }
    return 0;
#else
    (void)pixels, (void)w, (void)h;
    return have_png_encoder(cmd) ? 0 : -1;
#endif
}

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    for (; v >= 0x80; v >>= 7) n++;
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v) {
    for (; v >= 0x80; v >>= 7) *p++ = (uint8_t)(v | 0x80);
    *p++ = (uint8_t)v;
    return p;
}

/* The bytes of a length-delimited field (number < 16) holding len bytes. */
static size_t field_len(size_t len) { return 1 + varint_len(len) + len; }

static uint8_t *put_field(uint8_t *p, unsigned number, size_t len) {
    *p++ = (uint8_t)(number << 3 | 2);
    return put_varint(p, len);
}

/* A growing byte buffer for one serialized Example. */
typedef struct bytes_buf {
    uint8_t *p;
    size_t cap;
} bytes_buf;

/* Serializes Example{features{"image": bytes_list{png}, "label": int64_list{label}}} (proto3,
 * int64 packed) into b; returns its size, or 0 when out of memory. */
static size_t example_serialize(bytes_buf *b, const void *png, size_t png_len, int64_t label) {
    size_t blist = field_len(png_len);                     /* BytesList{value} */
    size_t fimg = field_len(blist);                        /* Feature{bytes_list = 1} */
    size_t eimg = field_len(5) + field_len(fimg);          /* map entry{key = 1, value = 2} */
    size_t ilist = field_len(varint_len((uint64_t)label)); /* Int64List{value, packed} */
    size_t flab = field_len(ilist);                        /* Feature{int64_list = 3} */
    size_t elab = field_len(5) + field_len(flab);
    size_t feats = field_len(eimg) + field_len(elab); /* Features{feature = 1 (map)} */
    size_t total = field_len(feats);                  /* Example{features = 1} */
    if (b->cap < total) {
        uint8_t *p = realloc(b->p, total);
        if (!p) return 0;
        b->p = p;
        b->cap = total;
    }
    uint8_t *p = b->p;
    p = put_field(p, 1, feats);
    p = put_field(p, 1, eimg);
    p = put_field(p, 1, 5);
    memcpy(p, "image", 5);
    p += 5;
    p = put_field(p, 2, fimg);
    p = put_field(p, 1, blist);
    p = put_field(p, 1, png_len);
    memcpy(p, png, png_len);
    p += png_len;
    p = put_field(p, 1, elab);
    p = put_field(p, 1, 5);
    memcpy(p, "label", 5);
    p += 5;
    p = put_field(p, 2, flab);
    p = put_field(p, 3, ilist);
    p = put_field(p, 1, varint_len((uint64_t)label));
    p = put_varint(p, (uint64_t)label);
    if ((size_t)(p - b->p) != total) abort(); /* the sizes above and the writes disagree */
    return total;
}

/* ---- output ------------------------------------------------------------------------------ */
typedef struct convert_out {
    const char *prefix; /* TFRecord shards PREFIX-%05d-of-%05d, or NULL */
    int shards;
    const char *folder; /* DIR/CLASS/NNNNN.png, or NULL */
    char **class_names; /* nclass names of the labels' folders, or NULL */
    int nclass;
} convert_out;

typedef struct shard_info {
    char *path;
    int64_t records, bytes;
} shard_info;

static void shards_free(shard_info *s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) free(s[i].path);
    free(s);
}

/* Writes the whole file `path` through path.tmp and a rename. Returns 0, or prints why not. */
static int write_file(const char *cmd, const char *path, char *tmp, const void *data, size_t len) {
    sprintf(tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        ferry_cli_error(cmd, "cannot create '%s': %s", tmp, strerror(errno));
        return -1;
    }
    bool ok = fwrite(data, 1, len, f) == len;
    int err = errno;
    if (fclose(f) != 0 && ok) ok = false, err = errno;
    if (ok && rename(tmp, path) != 0) {
        ferry_cli_error(cmd, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (!ok) {
        ferry_cli_error(cmd, "writing '%s': %s", tmp, strerror(err));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* "wrote 5 records in 2 shards: FIRST LAST (N bytes)"; with more than two files, FIRST ... LAST. */
static void print_summary(const char *what, int64_t records, const char *unit, const char *first, const char *last,
                          int files, int64_t bytes) {
    const char *between = files > 2 ? " ... " : files == 2 ? " " : "";
    printf("wrote %" PRId64 " %s%s in %d %s%s: %s%s%s (%" PRId64 " bytes)\n", records, what, records == 1 ? "" : "s",
           files, unit, files == 1 ? "" : "s", first, between, files > 1 ? last : "", bytes);
}

/* Writes the outputs of o from checked images and labels; on success *shards_out gets the shards
 * (o->shards of them, to free with shards_free). On failure prints why, removes the .tmp shards,
 * and returns -1. */
static int write_outputs(const char *cmd, ferry_runtime *rt, const idx_data *img, const idx_data *lab,
                         const convert_out *o, shard_info **shards_out) {
    const int64_t n = img->count;
    const uint32_t rows = img->dims[1], cols = img->dims[2];
    const int nshards = o->prefix ? o->shards : 1;
    int rc = -1, opened = 0;
    shard_info *shards = calloc((size_t)nshards, sizeof *shards);
    char *tmp = NULL, *file = NULL, *class_dir[256] = {0};
    bytes_buf ex = {0};
    ferry_tfrecord_writer *w = NULL;
    int64_t folder_bytes = 0;
    int label_width = 1, nclass_dirs = 0, first_class = -1, last_class = -1;
    if (!shards) goto oom;
    if (o->prefix) {
        for (int k = 0; k < nshards; k++) {
            shards[k].path = str_printf("%s-%05d-of-%05d", o->prefix, k, nshards);
            if (!shards[k].path) goto oom;
        }
        tmp = malloc(strlen(shards[0].path) + 5);
        if (!tmp) goto oom;
        const char *slash = strrchr(o->prefix, '/');
        if (slash && slash > o->prefix) { /* the directory of the shards, as --folder's */
            sprintf(tmp, "%.*s", (int)(slash - o->prefix), o->prefix);
            if (make_dirs(cmd, tmp)) goto done;
        }
    }
    if (o->folder) {
        int max_label = 0;
        for (int64_t i = 0; i < n; i++)
            if (lab->bytes[i] > max_label) max_label = lab->bytes[i];
        label_width = max_label >= 100 ? 3 : max_label >= 10 ? 2 : 1;
        if (make_dirs(cmd, o->folder)) goto done;
        size_t longest = 3;
        for (int c = 0; c < o->nclass; c++)
            if (strlen(o->class_names[c]) > longest) longest = strlen(o->class_names[c]);
        size_t room = strlen(o->folder) + longest + 32 + (tmp ? strlen(shards[0].path) + 5 : 0);
        char *ftmp = realloc(tmp, room + 5);
        if (!ftmp) goto oom;
        tmp = ftmp;
        file = malloc(room);
        if (!file) goto oom;
    }
    for (int k = 0; k < nshards; k++) {
        int64_t begin = (int64_t)k * n / nshards, end = (int64_t)(k + 1) * n / nshards;
        if (o->prefix) {
            sprintf(tmp, "%s.tmp", shards[k].path);
            if (ferry_tfrecord_writer_open(rt, tmp, NULL, &w)) {
                ferry_cli_error(cmd, "%s", ferry_cli_reason(ferry_last_error()));
                goto done;
            }
            opened = k + 1;
            shards[k].records = end - begin;
        }
        for (int64_t i = begin; i < end; i++) {
            void *png;
            size_t png_len;
            if (png_encode(cmd, img->bytes + (size_t)i * img->item, cols, rows, &png, &png_len)) goto done;
            int label = lab->bytes[i];
            if (o->prefix) {
                size_t len = example_serialize(&ex, png, png_len, label);
                if (!len || ferry_tfrecord_writer_write(w, ex.p, len)) {
                    free(png);
                    if (!len) goto oom;
                    ferry_cli_error(cmd, "%s", ferry_cli_reason(ferry_tfrecord_writer_error(w)));
                    goto done;
                }
            }
            if (o->folder) {
                if (!class_dir[label]) {
                    class_dir[label] = label < o->nclass ? str_printf("%s/%s", o->folder, o->class_names[label])
                                                         : str_printf("%s/%0*d", o->folder, label_width, label);
                    if (!class_dir[label] || make_dirs(cmd, class_dir[label])) {
                        free(png);
                        if (!class_dir[label]) goto oom;
                        goto done;
                    }
                    nclass_dirs++;
                }
                sprintf(file, "%s/%05" PRId64 ".png", class_dir[label], i);
                if (write_file(cmd, file, tmp, png, png_len)) {
                    free(png);
                    ferry_cli_error(cmd, "%s keeps the %" PRId64 " image%s written before the error", o->folder, i,
                                    i == 1 ? "" : "s");
                    goto done;
                }
                folder_bytes += (int64_t)png_len;
            }
            free(png);
        }
        if (o->prefix) {
            int crc = ferry_tfrecord_writer_close(w);
            w = NULL;
            if (crc) {
                ferry_cli_error(cmd, "%s", ferry_cli_reason(ferry_last_error()));
                goto done;
            }
            sprintf(tmp, "%s.tmp", shards[k].path);
            shards[k].bytes = file_size(tmp);
        }
    }
    /* Every shard is complete: only now do they take their names (all of them, or none). */
    for (int k = 0; k < opened; k++) {
        sprintf(tmp, "%s.tmp", shards[k].path);
        if (rename(tmp, shards[k].path) != 0) {
            ferry_cli_error(cmd, "cannot rename '%s' to '%s': %s", tmp, shards[k].path, strerror(errno));
            for (int j = 0; j < k; j++) unlink(shards[j].path);
            goto done;
        }
    }
    opened = 0;
    if (o->prefix) {
        int64_t bytes = 0;
        for (int k = 0; k < nshards; k++) bytes += shards[k].bytes;
        print_summary("record", n, "shard", shards[0].path, shards[nshards - 1].path, nshards, bytes);
    }
    if (o->folder) {
        for (int c = 0; c < 256; c++)
            if (class_dir[c]) {
                if (first_class < 0) first_class = c;
                last_class = c;
            }
        print_summary("image", n, "class folder", first_class < 0 ? o->folder : class_dir[first_class],
                      last_class < 0 ? "" : class_dir[last_class], nclass_dirs, folder_bytes);
    }
    rc = 0;
    goto done;
oom:
    ferry_cli_error(cmd, "out of memory");
done:
    if (w) ferry_tfrecord_writer_close(w);
    for (int k = 0; k < opened; k++) {
        sprintf(tmp, "%s.tmp", shards[k].path);
        unlink(tmp);
    }
    for (int c = 0; c < 256; c++) free(class_dir[c]);
    free(ex.p);
    free(file);
    free(tmp);
    if (rc == 0 && shards_out) *shards_out = shards;
    else shards_free(shards, nshards);
    return rc;
}

/* ---- options ----------------------------------------------------------------------------- */
/* When argv[*i] is the option `name` ("--name V" or "--name=V"): sets *value, moves *i past it
 * and returns 1; a missing value is a usage error (returns FERRY_CLI_USAGE). Else returns 0. */
static int option_value(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0') return 0;
    if (*i + 1 >= argc) return ferry_cli_usage_error(cmd, "option %s needs a value", name);
    *value = argv[++*i];
    return 1;
}

static int parse_shards(const char *cmd, const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno || v < 1 || v > MAX_SHARDS)
        return ferry_cli_usage_error(cmd, "--shards needs a whole number from 1 to %d, got '%s'", MAX_SHARDS, s);
    *out = (int)v;
    return 0;
}

/* Splits "A,B,..." into o->class_names, checking each name. */
static int parse_class_names(const char *cmd, const char *s, convert_out *o) {
    int n = 1;
    for (const char *p = s; *p; p++) n += *p == ',';
    o->class_names = calloc((size_t)n, sizeof *o->class_names);
    if (!o->class_names) {
        ferry_cli_error(cmd, "out of memory");
        return FERRY_CLI_FAILED;
    }
    for (const char *p = s;; p++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *name = strndup(p, len);
        if (!name) {
            ferry_cli_error(cmd, "out of memory");
            return FERRY_CLI_FAILED;
        }
        o->class_names[o->nclass++] = name;
        int label = o->nclass - 1;
        if (len == 0) return ferry_cli_usage_error(cmd, "--class-names: the name of label %d is empty", label);
        if (strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            return ferry_cli_usage_error(
                cmd, "--class-names: '%s' (label %d) cannot name a folder: no '/', '.' or '..'", name, label);
        for (int j = 0; j < label; j++)
            if (strcmp(o->class_names[j], name) == 0)
                return ferry_cli_usage_error(cmd, "--class-names: '%s' names both label %d and label %d", name, j,
                                             label);
        if (!e) break;
        p = e;
    }
    return 0;
}

/* ---- ferry convert idx ------------------------------------------------------------------- */
static int cmd_idx(int argc, char **argv) {
    const char *cmd = "convert idx";
    const char *pos[2] = {NULL, NULL}, *shards_arg = NULL, *names_arg = NULL;
    int npos = 0, rc = 0;
    bool only_args = false;
    convert_out o = {.shards = 1};
    for (int i = 2; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        if (!only_args && strcmp(a, "--") == 0) {
            only_args = true;
        } else if (!only_args && a[0] == '-' && a[1] != '\0') {
            if ((rc = option_value(cmd, argc, argv, &i, "--tfrecord", &o.prefix)) ||
                (rc = option_value(cmd, argc, argv, &i, "--shards", &shards_arg)) ||
                (rc = option_value(cmd, argc, argv, &i, "--folder", &o.folder)) ||
                (rc = option_value(cmd, argc, argv, &i, "--class-names", &names_arg))) {
                rc = rc == 1 ? 0 : rc;
            } else {
                rc = ferry_cli_usage_error(cmd, "unknown option '%s'", a);
            }
        } else if (npos < 2) {
            pos[npos++] = a;
        } else {
            rc = ferry_cli_usage_error(cmd, "unexpected argument '%s': the arguments are IMAGES and LABELS", a);
        }
    }
    if (rc == 0 && npos < 2)
        rc = ferry_cli_usage_error(cmd, npos == 0 ? "missing the IDX files IMAGES and LABELS"
                                                  : "missing the IDX file of the labels (LABELS)");
    if (rc == 0 && !o.prefix && !o.folder)
        rc = ferry_cli_usage_error(cmd, "nothing to write: give --tfrecord PREFIX, --folder DIR or both");
    if (rc == 0 && o.prefix && !*o.prefix) rc = ferry_cli_usage_error(cmd, "--tfrecord needs a non-empty PREFIX");
    if (rc == 0 && o.folder && !*o.folder) rc = ferry_cli_usage_error(cmd, "--folder needs a non-empty DIR");
    if (rc == 0 && shards_arg && !o.prefix)
        rc = ferry_cli_usage_error(cmd, "--shards splits the --tfrecord output; give --tfrecord PREFIX too");
    if (rc == 0 && shards_arg) rc = parse_shards(cmd, shards_arg, &o.shards);
    if (rc == 0 && names_arg && !o.folder)
        rc = ferry_cli_usage_error(cmd, "--class-names names the folders of --folder; give --folder DIR too");
    if (rc == 0 && names_arg) rc = parse_class_names(cmd, names_arg, &o);
    idx_data img = {0}, lab = {0};
    ferry_runtime *rt = NULL;
    if (rc) goto done;
    rc = FERRY_CLI_FAILED;
    if (!have_png_encoder(cmd)) goto done;
    if (idx_load(cmd, pos[0], 3, false, &img) || idx_load(cmd, pos[1], 1, false, &lab) || check_counts(cmd, &img, &lab))
        goto done;
    if (o.class_names)
        for (int64_t i = 0; i < lab.count; i++)
            if (lab.bytes[i] >= o.nclass) {
                ferry_cli_error(cmd,
                                "%s: byte %" PRId64 ": label %d (record %" PRId64 ") has no class name: "
                                "--class-names names labels 0 to %d",
                                lab.path, lab.header + i, lab.bytes[i], i, o.nclass - 1);
                goto done;
            }
    if (ferry_runtime_create(NULL, &rt)) {
        ferry_cli_error(cmd, "%s", ferry_cli_reason(ferry_last_error()));
        goto done;
    }
    if (write_outputs(cmd, rt, &img, &lab, &o, NULL)) goto done;
    rc = FERRY_CLI_OK;
done:
    ferry_runtime_free(rt);
    free(img.bytes);
    free(lab.bytes);
    for (int c = 0; c < o.nclass; c++) free(o.class_names[c]);
    free(o.class_names);
    return rc;
}

/* ---- ferry convert fashion-mnist --------------------------------------------------------- */
enum { TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS, NSOURCES };
static const char *const source_names[NSOURCES] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

/* The text of OUTDIR/MANIFEST for these sources and outputs (their names relative to OUTDIR). */
static char *manifest_text(char *const src[NSOURCES], const shard_info *out, int nout, size_t outdir_len) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    fprintf(f, "# ferry %s convert fashion-mnist: the inputs, and the files written from them (records, bytes)\n",
            ferry_version());
    for (int i = 0; i < NSOURCES; i++) fprintf(f, "source\t%s\t%" PRId64 "\n", src[i], file_size(src[i]));
    for (int i = 0; i < nout; i++)
        fprintf(f, "file\t%s\t%" PRId64 "\t%" PRId64 "\n", out[i].path + outdir_len + 1, out[i].records, out[i].bytes);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* The contents of a small text file, or NULL (absent, unreadable, too large). */
static char *read_small_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = malloc(MANIFEST_MAX + 1);
    size_t n = s ? fread(s, 1, MANIFEST_MAX + 1, f) : 0;
    fclose(f);
    if (!s || n > MANIFEST_MAX) {
        free(s);
        return NULL;
    }
    s[n] = '\0';
    return s;
}

/* Removes every shard file of an earlier run in outdir that is not one of out (another --shards
 * count, or a run cut short before its MANIFEST): names train.tfrecord-* and test.tfrecord-*,
 * temporary files included, so that a glob of the outputs finds this run's shards only. */
static void remove_stale(const char *outdir, const shard_info *out, int nout, size_t outdir_len) {
    DIR *dir = opendir(outdir);
    if (!dir) return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        const char *name = e->d_name;
        if (strncmp(name, "train.tfrecord-", 15) != 0 && strncmp(name, "test.tfrecord-", 14) != 0) continue;
        bool keep = false;
        for (int i = 0; i < nout && !keep; i++) keep = strcmp(out[i].path + outdir_len + 1, name) == 0;
        char *path = keep ? NULL : str_printf("%s/%s", outdir, name);
        if (path) unlink(path);
        free(path);
    }
    closedir(dir);
}

static int cmd_fashion_mnist(int argc, char **argv) {
    const char *cmd = "convert fashion-mnist";
    const char *outdir = NULL, *source = DEFAULT_SOURCE, *shards_arg = NULL;
    int rc = 0, shards = FASHION_SHARDS;
    bool only_args = false;
    for (int i = 2; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        if (!only_args && strcmp(a, "--") == 0) {
            only_args = true;
        } else if (!only_args && a[0] == '-' && a[1] != '\0') {
            if ((rc = option_value(cmd, argc, argv, &i, "--shards", &shards_arg)) ||
                (rc = option_value(cmd, argc, argv, &i, "--source", &source))) {
                rc = rc == 1 ? 0 : rc;
            } else {
                rc = ferry_cli_usage_error(cmd, "unknown option '%s'", a);
            }
        } else if (!outdir) {
            outdir = a;
        } else {
            rc = ferry_cli_usage_error(cmd, "takes one output directory, got '%s' and '%s'", outdir, a);
        }
    }
    if (rc == 0 && !outdir) rc = ferry_cli_usage_error(cmd, "missing the output directory OUTDIR");
    if (rc == 0 && !*outdir) rc = ferry_cli_usage_error(cmd, "the output directory is an empty name");
    if (rc == 0 && !*source) rc = ferry_cli_usage_error(cmd, "--source needs a directory");
    if (rc == 0 && shards_arg) rc = parse_shards(cmd, shards_arg, &shards);
    if (rc) return rc;

    char *src[NSOURCES] = {0}, *manifest = NULL, *old = NULL, *text = NULL;
    char *prefix[2] = {NULL, NULL};
    idx_data hdr[NSOURCES] = {0}, data[NSOURCES] = {0};
    shard_info *written[2] = {NULL, NULL}, *all = NULL;
    const int nshards[2] = {shards, 1};
    ferry_runtime *rt = NULL;
    rc = FERRY_CLI_FAILED;
    size_t outdir_len = strlen(outdir);
    while (outdir_len > 1 && outdir[outdir_len - 1] == '/') outdir_len--;
    for (int i = 0; i < NSOURCES; i++) {
        src[i] = str_printf("%s/%s.gz", source, source_names[i]);
        if (!src[i]) goto oom;
        if (ferry_cli_check_readable(src[i]) == ENOENT) { /* the same file without .gz */
            src[i][strlen(src[i]) - 3] = '\0';
            if (ferry_cli_check_readable(src[i]) == ENOENT) strcat(src[i], ".gz");
        }
        int err = ferry_cli_check_readable(src[i]);
        if (err) {
            ferry_cli_error(cmd,
                            "%s: %s; the Fashion-MNIST files come with Debian's package dataset-fashion-mnist "
                            "(apt-get install dataset-fashion-mnist), or give --source DIR",
                            src[i], strerror(err));
            goto done;
        }
    }
    manifest = str_printf("%.*s/MANIFEST", (int)outdir_len, outdir);
    prefix[0] = str_printf("%.*s/train.tfrecord", (int)outdir_len, outdir);
    prefix[1] = str_printf("%.*s/test.tfrecord", (int)outdir_len, outdir);
    all = calloc((size_t)shards + 1, sizeof *all);
    if (!manifest || !prefix[0] || !prefix[1] || !all) goto oom;

    /* Up to date? The headers give the record counts; the files on disk give their bytes. */
    for (int i = 0; i < NSOURCES; i++)
        if (idx_load(cmd, src[i], i % 2 ? 1 : 3, true, &hdr[i])) goto done;
    if (check_counts(cmd, &hdr[TRAIN_IMAGES], &hdr[TRAIN_LABELS]) ||
        check_counts(cmd, &hdr[TEST_IMAGES], &hdr[TEST_LABELS]))
        goto done;
    bool complete = true;
    for (int s = 0, j = 0; s < 2; s++) {
        int64_t n = hdr[s == 0 ? TRAIN_IMAGES : TEST_IMAGES].count;
        for (int k = 0; k < nshards[s]; k++, j++) {
            all[j].path = str_printf("%s-%05d-of-%05d", prefix[s], k, nshards[s]);
            if (!all[j].path) goto oom;
            all[j].records = (int64_t)(k + 1) * n / nshards[s] - (int64_t)k * n / nshards[s];
            all[j].bytes = file_size(all[j].path);
            complete = complete && all[j].bytes >= 0;
        }
    }
    old = read_small_file(manifest);
    if (complete && old) {
        text = manifest_text(src, all, shards + 1, outdir_len);
        if (!text) goto oom;
        if (strcmp(text, old) == 0) {
            printf("%s: up to date (%" PRId64 " training records in %d shard%s, %" PRId64 " test records; %s)\n",
                   outdir, hdr[TRAIN_IMAGES].count, shards, shards == 1 ? "" : "s", hdr[TEST_IMAGES].count, manifest);
            rc = FERRY_CLI_OK;
            goto done;
        }
    }

    if (!have_png_encoder(cmd)) goto done;
    for (int i = 0; i < NSOURCES; i++)
        if (idx_load(cmd, src[i], i % 2 ? 1 : 3, false, &data[i])) goto done;
    if (check_counts(cmd, &data[TRAIN_IMAGES], &data[TRAIN_LABELS]) ||
        check_counts(cmd, &data[TEST_IMAGES], &data[TEST_LABELS]))
        goto done;
    if (make_dirs(cmd, outdir)) goto done;
    if (unlink(manifest) != 0 && errno != ENOENT) {
        ferry_cli_error(cmd, "cannot remove '%s': %s", manifest, strerror(errno));
        goto done;
    }
    if (ferry_runtime_create(NULL, &rt)) {
        ferry_cli_error(cmd, "%s", ferry_cli_reason(ferry_last_error()));
        goto done;
    }
    for (int s = 0; s < 2; s++) {
        convert_out o = {.prefix = prefix[s], .shards = nshards[s]};
        int img = s == 0 ? TRAIN_IMAGES : TEST_IMAGES;
        if (write_outputs(cmd, rt, &data[img], &data[img + 1], &o, &written[s])) goto done;
    }
    for (int j = 0; j <= shards; j++) {
        const shard_info *w = j < shards ? &written[0][j] : &written[1][0];
        all[j].records = w->records;
        all[j].bytes = w->bytes;
    }
    remove_stale(outdir, all, shards + 1, outdir_len); /* before the MANIFEST that lists this run's */
    free(text);
    text = manifest_text(src, all, shards + 1, outdir_len);
    if (!text) goto oom;
    char *tmp = str_printf("%s.tmp", manifest);
    if (!tmp) goto oom;
    int wrc = write_file(cmd, manifest, tmp, text, strlen(text));
    free(tmp);
    if (wrc) goto done;
    printf("wrote %s\n", manifest);
    rc = FERRY_CLI_OK;
    goto done;
oom:
    ferry_cli_error(cmd, "out of memory");
done:
    ferry_runtime_free(rt);
    for (int i = 0; i < NSOURCES; i++) {
        free(src[i]);
        free(data[i].bytes);
    }
    shards_free(written[0], shards);
    shards_free(written[1], 1);
    shards_free(all, shards + 1);
    free(prefix[0]);
    free(prefix[1]);
    free(manifest);
    free(old);
    free(text);
    return rc;
}

int ferry_cli_convert(int argc, char **argv) {
    if (argc < 2) return ferry_cli_usage_error("convert", "missing the subcommand: idx or fashion-mnist");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        if (strcmp(sub, "help") == 0 && argc > 2) {
            if (ferry_cli_convert_help(stdout, argv[2])) return FERRY_CLI_OK;
            return ferry_cli_usage_error("convert",
                                         "unknown subcommand '%s'; the subcommands are idx and fashion-mnist", argv[2]);
        }
        ferry_cli_convert_help(stdout, NULL);
        return FERRY_CLI_OK;
    }
    bool is_idx = strcmp(sub, "idx") == 0;
    if (!is_idx && strcmp(sub, "fashion-mnist") != 0)
        return ferry_cli_usage_error("convert", "unknown subcommand '%s'; the subcommands are idx and fashion-mnist",
                                     sub);
    if (ferry_cli_wants_help(argc, argv, 2)) {
        ferry_cli_convert_help(stdout, sub);
        return FERRY_CLI_OK;
    }
    return is_idx ? cmd_idx(argc, argv) : cmd_fashion_mnist(argc, argv);
}
