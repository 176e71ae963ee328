/*
 * mcm (Media Communications Mesh) input and output devices over libmcm_dp, MCM's C API.
 *
 *   -f mcm              raw video, in and out (rawvideo packets, one frame per buffer)
 *   -f mcm_audio_pcm16  PCM s16be, in and out
 *   -f mcm_audio_pcm24  PCM s24be, in and out
 *
 * Options and defaults are MCM's FFmpeg plugin's. The logic (connections, shared-memory
 * flows, the media proxy) lives in libmcm_dp; this file only maps options to MCM's
 * connection JSON and packets to buffers.
 *
 * Timestamps: senders put the packet's pts, dts and duration in each buffer's metadata (ns,
 * little-endian u64 each, then u32 flags: mcm's timing metadata, as mcmsink writes it too);
 * a receiver gives the sender's pts relative to the first buffer it got. Buffers without
 * that metadata (other senders) are stamped from their sequence number, the grain index,
 * which counts frames (or audio packets) in real time: pts = index - first index in a time
 * base of 1/frame_rate (video), or that times the samples per packet in 1/sample_rate
 * (audio), so lost buffers leave gaps, never shifts.
 *
 * Reliable connections (`-reliable 1`, an mcm extension): the sender waits for slow
 * receivers for as long as they live (a receiver that dies stops holding it back).
 *
 * Audio: the muxer cuts the stream into buffers of one packet time (ptime); the last buffer
 * of a stream carries what is left and is shorter, never padded.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 * Builds against FFmpeg 5.1 (lavf 59) and 7.1 (lavf 61).
 */

#include <string.h>

#include <mesh_dp.h>

#include "libavutil/avassert.h"
#include "libavutil/avstring.h"
#include "libavutil/channel_layout.h"
#include "libavutil/imgutils.h"
#include "libavutil/intreadwrite.h"
#include "libavutil/mathematics.h"
#include "libavutil/mem.h"
#include "libavutil/opt.h"
#include "libavutil/pixdesc.h"
#include "libavutil/thread.h"
#include "libavformat/avformat.h"
#include "libavformat/internal.h"
#include "libavformat/version.h"
#if LIBAVFORMAT_VERSION_MAJOR >= 61
#include "libavformat/demux.h"
#include "libavformat/mux.h"
#endif
#include "avdevice.h"

#define MCM_MAX_STRING 255
#define MCM_WAIT_SLICE_MS 200
#define MCM_TIMING_SIZE 28
#define MCM_METADATA_SIZE 32

typedef struct McmContext {
    const AVClass *class;
    /* options */
    int buf_queue_cap;
    int conn_delay;
    char *conn_type;
    char *urn;
    char *ip_addr;
    int port;
    char *mcast_sip_addr;
    char *transport;
    int payload_type;
    char *transport_pixel_format;
    int width, height;
    enum AVPixelFormat pix_fmt;
    AVRational frame_rate;
    int channels;
    int sample_rate;
    char *ptime;
    char *rdma_provider;
    int rdma_num_endpoints;
    int reliable;
    /* state */
    int audio_bits; /* 16 or 24 for the audio devices, 0 for video */
    MeshClient *client;
    MeshConnection *conn;
    int64_t first_seq;
    int64_t first_pts_ns;
    size_t frame_bytes;   /* audio: bytes per sample period, all channels */
    uint8_t *pending;     /* audio muxer: bytes waiting for a full buffer */
    size_t pending_len;
    int64_t pending_pts;
} McmContext;

/* One client (one link to the media proxy) per process, shared by all connections. */
static AVMutex client_lock = AV_MUTEX_INITIALIZER;
static MeshClient *shared_client;
static int client_users;

static int client_get(AVFormatContext *s, McmContext *c)
{
    int rc = 0;
    ff_mutex_lock(&client_lock);
    if (!shared_client)
        rc = mesh_create_client(&shared_client, NULL);
    if (rc == 0) {
        client_users++;
        c->client = shared_client;
    }
    ff_mutex_unlock(&client_lock);
    if (rc) {
        av_log(s, AV_LOG_ERROR, "mcm: cannot reach the media proxy: %s (%d)\n", mesh_err2str(rc), rc);
        return AVERROR(EIO);
    }
    return 0;
}

static void client_put(McmContext *c)
{
    if (!c->client)
        return;
    ff_mutex_lock(&client_lock);
    if (--client_users == 0)
        mesh_delete_client(&shared_client);
    ff_mutex_unlock(&client_lock);
    c->client = NULL;
}

/* A string option that goes into the JSON: bounded, and nothing to escape. */
static int check_string(AVFormatContext *s, const char *name, const char *v)
{
    size_t len = v ? strlen(v) : 0;
    if (len > MCM_MAX_STRING) {
        av_log(s, AV_LOG_ERROR, "mcm: %s is %zu characters long, at most %d\n", name, len, MCM_MAX_STRING);
        return AVERROR(EINVAL);
    }
    for (size_t i = 0; i < len; i++) {
        if (v[i] == '"' || v[i] == '\\' || (unsigned char)v[i] < 0x20) {
            av_log(s, AV_LOG_ERROR, "mcm: %s contains a quote, backslash or control character\n", name);
            return AVERROR(EINVAL);
        }
    }
    return 0;
}

/* MCM's connection JSON for the options and a `payload` member. */
static int connection_json(AVFormatContext *s, McmContext *c, const char *payload, char **json)
{
    char conn[1024];
    int ret;
    const char *strings[][2] = {
        { "conn_type", c->conn_type }, { "urn", c->urn }, { "ip_addr", c->ip_addr },
        { "mcast_sip_addr", c->mcast_sip_addr }, { "transport", c->transport },
        { "transport_pixel_format", c->transport_pixel_format },
        { "rdma_provider", c->rdma_provider },
    };
    for (size_t i = 0; i < FF_ARRAY_ELEMS(strings); i++)
        if ((ret = check_string(s, strings[i][0], strings[i][1])) < 0)
            return ret;
    if (!strcmp(c->conn_type, "multipoint-group")) {
        if (!c->urn || !*c->urn) {
            av_log(s, AV_LOG_ERROR, "mcm: conn_type multipoint-group needs a urn\n");
            return AVERROR(EINVAL);
        }
        snprintf(conn, sizeof(conn), "\"multipointGroup\":{\"urn\":\"%s\"}", c->urn);
    } else if (!strcmp(c->conn_type, "st2110")) {
        const char *transport = c->audio_bits ? "st2110-30" : c->transport;
        snprintf(conn, sizeof(conn),
                 "\"st2110\":{\"transport\":\"%s\",\"ipAddr\":\"%s\",\"port\":%d,"
                 "\"multicastSourceIpAddr\":\"%s\",\"payloadType\":%d,\"transportPixelFormat\":\"%s\"}",
                 transport, c->ip_addr ? c->ip_addr : "", c->port,
                 c->mcast_sip_addr ? c->mcast_sip_addr : "", c->payload_type,
                 c->transport_pixel_format ? c->transport_pixel_format : "yuv422p10rfc4175");
    } else if (!strcmp(c->conn_type, "rdma")) {
        snprintf(conn, sizeof(conn), "\"rdma\":{}");
    } else {
        av_log(s, AV_LOG_ERROR, "mcm: conn_type '%s': use multipoint-group, st2110 or rdma\n", c->conn_type);
        return AVERROR(EINVAL);
    }
    *json = av_asprintf("{\"bufferQueueCapacity\":%d,\"connCreationDelayMilliseconds\":%d,"
                        "\"maxMetadataSize\":%d,\"reliable\":%s,\"connection\":{%s},"
                        "\"options\":{\"rdma\":{\"provider\":\"%s\",\"num_endpoints\":%d}},"
                        "\"payload\":{%s}}",
                        c->buf_queue_cap, c->conn_delay, MCM_METADATA_SIZE,
                        c->reliable ? "true" : "false", conn, c->rdma_provider,
                        c->rdma_num_endpoints, payload);
    return *json ? 0 : AVERROR(ENOMEM);
}

static int open_connection(AVFormatContext *s, McmContext *c, const char *payload, int tx)
{
    char *json = NULL;
    int ret, rc;
    c->first_seq = -1;
    c->first_pts_ns = -1;
    if ((ret = connection_json(s, c, payload, &json)) < 0)
        return ret;
    if ((ret = client_get(s, c)) < 0) {
        av_free(json);
        return ret;
    }
    av_log(s, AV_LOG_DEBUG, "mcm: connection %s\n", json);
    rc = tx ? mesh_create_tx_connection(c->client, &c->conn, json)
            : mesh_create_rx_connection(c->client, &c->conn, json);
    av_free(json);
    if (rc) {
        av_log(s, AV_LOG_ERROR, "mcm: cannot create the %s connection: %s (%d)\n",
               tx ? "transmit" : "receive", mesh_err2str(rc), rc);
        client_put(c);
        return rc == -MESH_ERR_CONN_CONFIG_INVAL || rc == -MESH_ERR_CONN_CONFIG_INCOMPAT
                   ? AVERROR(EINVAL) : AVERROR(EIO);
    }
    return 0;
}

static void close_connection(McmContext *c)
{
    if (c->conn)
        mesh_delete_connection(&c->conn);
    client_put(c);
    av_freep(&c->pending);
}

/* The pixel format names MCM's JSON and FFmpeg share. */
static const char *video_format_name(enum AVPixelFormat f)
{
    switch (f) {
    case AV_PIX_FMT_YUV422P10LE: return "yuv422p10le";
    case AV_PIX_FMT_UYVY422: return "uyvy422";
    case AV_PIX_FMT_YUYV422: return "yuyv422";
    case AV_PIX_FMT_YUV420P: return "yuv420p";
    case AV_PIX_FMT_NV12: return "nv12";
    case AV_PIX_FMT_P010LE: return "p010le";
    case AV_PIX_FMT_RGBA: return "rgba";
    case AV_PIX_FMT_BGRA: return "bgra";
    default: return NULL;
    }
}

static int video_payload(AVFormatContext *s, int w, int h, enum AVPixelFormat f, AVRational fps,
                         char *out, size_t n)
{
    const char *name = video_format_name(f);
    if (!name) {
        av_log(s, AV_LOG_ERROR, "mcm: pixel format %s is not carried (yuv422p10le, uyvy422, yuyv422, "
               "yuv420p, nv12, p010le, rgba, bgra)\n", av_get_pix_fmt_name(f) ? av_get_pix_fmt_name(f) : "none");
        return AVERROR(EINVAL);
    }
    if (w <= 0 || h <= 0 || fps.num <= 0 || fps.den <= 0) {
        av_log(s, AV_LOG_ERROR, "mcm: video size %dx%d at %d/%d fps is not valid\n", w, h, fps.num, fps.den);
        return AVERROR(EINVAL);
    }
    snprintf(out, n, "\"video\":{\"width\":%d,\"height\":%d,\"fps\":%.6f,\"pixelFormat\":\"%s\"}",
             w, h, av_q2d(fps), name);
    return 0;
}

static int check_payload_size(AVFormatContext *s, McmContext *c, size_t want)
{
    if (c->conn->payload_size != want) {
        av_log(s, AV_LOG_ERROR, "mcm: the connection's buffers hold %zu bytes, a frame is %zu\n",
               c->conn->payload_size, want);
        return AVERROR(EINVAL);
    }
    return 0;
}

/* mcm's timing metadata: pts, dts, duration in ns (UINT64_MAX: none), flags. */
static void put_timing(MeshBuffer *buf, const AVStream *st, int64_t pts, int64_t dts, int64_t duration)
{
    uint8_t *m = buf->metadata_ptr;
    const AVRational ns = { 1, 1000000000 };
    int64_t v[3] = { pts, dts, duration };
    if (!m || buf->conn->metadata_size < MCM_TIMING_SIZE)
        return;
    for (int i = 0; i < 3; i++)
        AV_WL64(m + 8 * i, v[i] == AV_NOPTS_VALUE || v[i] < 0 ? UINT64_MAX
                                                              : (uint64_t)av_rescale_q(v[i], st->time_base, ns));
    AV_WL32(m + 24, 0);
    mesh_buffer_set_metadata_len(buf, MCM_TIMING_SIZE);
}

/* Sends `len` bytes as one buffer. */
static int send_buffer(AVFormatContext *s, McmContext *c, const uint8_t *data, size_t len,
                       int64_t pts, int64_t dts, int64_t duration)
{
    MeshBuffer *buf = NULL;
    int rc;
    /* A reliable connection waits for its slowest receiver: in slices, so an interrupt
     * (Ctrl-C) is noticed. */
    while ((rc = mesh_get_buffer(c->conn, &buf)) == -MESH_ERR_TIMEOUT && c->reliable) {
        const AVIOInterruptCB *cb = &s->interrupt_callback;
        if (cb->callback && cb->callback(cb->opaque))
            return AVERROR_EXIT;
    }
    if (rc) {
        av_log(s, AV_LOG_ERROR, "mcm: no buffer to send into: %s (%d)\n", mesh_err2str(rc), rc);
        return AVERROR(EIO);
    }
    if (len > c->conn->payload_size) {
        av_log(s, AV_LOG_ERROR, "mcm: packet of %zu bytes, buffers hold %zu\n", len, c->conn->payload_size);
        mesh_buffer_set_payload_len(buf, 0);
        mesh_put_buffer(&buf);
        return AVERROR(EINVAL);
    }
    memcpy(buf->payload_ptr, data, len);
    mesh_buffer_set_payload_len(buf, len);
    put_timing(buf, s->streams[0], pts, dts, duration);
    rc = mesh_put_buffer(&buf);
    if (rc) {
        av_log(s, AV_LOG_ERROR, "mcm: sending failed: %s (%d)\n", mesh_err2str(rc), rc);
        return AVERROR(EIO);
    }
    return 0;
}

/* The next received buffer, waiting in slices so an interrupt (Ctrl-C, a timeout set by the
 * application) is noticed; AVERROR_EOF when the sender ended the stream. */
static int receive_buffer(AVFormatContext *s, McmContext *c, MeshBuffer **buf)
{
    for (;;) {
        const AVIOInterruptCB *cb = &s->interrupt_callback;
        int rc;
        if (cb->callback && cb->callback(cb->opaque))
            return AVERROR_EXIT;
        rc = mesh_get_buffer_timeout(c->conn, buf, MCM_WAIT_SLICE_MS);
        if (rc == 0)
            return 0;
        if (rc == -MESH_ERR_TIMEOUT)
            continue;
        if (rc == -MESH_ERR_CONN_CLOSED)
            return AVERROR_EOF;
        av_log(s, AV_LOG_ERROR, "mcm: receiving failed: %s (%d)\n", mesh_err2str(rc), rc);
        return AVERROR(EIO);
    }
}

/* A received buffer as a packet: pts from the sender's timing metadata, else counting
 * `per_index` units per sequence number. */
static int buffer_to_packet(AVFormatContext *s, McmContext *c, MeshBuffer *buf, AVPacket *pkt,
                            int64_t per_index, int64_t duration)
{
    const AVRational ns = { 1, 1000000000 };
    uint64_t seq = 0, pts_ns = UINT64_MAX;
    int ret = av_new_packet(pkt, (int)buf->payload_len);
    if (ret < 0) {
        mesh_put_buffer(&buf);
        return ret;
    }
    memcpy(pkt->data, buf->payload_ptr, buf->payload_len);
    if (buf->metadata_len >= MCM_TIMING_SIZE)
        pts_ns = AV_RL64(buf->metadata_ptr);
    mcm_buffer_seq(buf, &seq, NULL);
    mesh_put_buffer(&buf);
    if (c->first_seq < 0)
        c->first_seq = (int64_t)seq;
    if (pts_ns != UINT64_MAX && pts_ns <= INT64_MAX) {
        if (c->first_pts_ns < 0)
            c->first_pts_ns = (int64_t)pts_ns;
        pkt->pts = av_rescale_q((int64_t)pts_ns - c->first_pts_ns, ns, s->streams[0]->time_base);
    } else {
        pkt->pts = ((int64_t)seq - c->first_seq) * per_index;
    }
    pkt->dts = pkt->pts;
    pkt->duration = duration;
    pkt->stream_index = 0;
    pkt->flags |= AV_PKT_FLAG_KEY;
    return 0;
}

/* ---- video ---- */

static int mcm_video_write_header(AVFormatContext *s)
{
    McmContext *c = s->priv_data;
    AVStream *st;
    AVCodecParameters *par;
    AVRational fps;
    char payload[256];
    int ret;
    if (s->nb_streams != 1 || s->streams[0]->codecpar->codec_type != AVMEDIA_TYPE_VIDEO ||
        s->streams[0]->codecpar->codec_id != AV_CODEC_ID_RAWVIDEO) {
        av_log(s, AV_LOG_ERROR, "mcm: one raw video stream expected (-c:v rawvideo)\n");
        return AVERROR(EINVAL);
    }
    st = s->streams[0];
    par = st->codecpar;
    fps = st->avg_frame_rate.num > 0 ? st->avg_frame_rate : c->frame_rate;
    if (c->width != par->width || c->height != par->height || c->pix_fmt != par->format)
        av_log(s, AV_LOG_VERBOSE, "mcm: sending the stream's %dx%d %s (video_size and pixel_format "
               "apply to receivers)\n", par->width, par->height, av_get_pix_fmt_name(par->format));
    if ((ret = video_payload(s, par->width, par->height, par->format, fps, payload, sizeof(payload))) < 0)
        return ret;
    if ((ret = open_connection(s, c, payload, 1)) < 0)
        return ret;
    return check_payload_size(s, c, av_image_get_buffer_size(par->format, par->width, par->height, 1));
}

static int mcm_video_write_packet(AVFormatContext *s, AVPacket *pkt)
{
    McmContext *c = s->priv_data;
    return send_buffer(s, c, pkt->data, pkt->size, pkt->pts, pkt->dts, pkt->duration);
}

static int mcm_write_trailer(AVFormatContext *s)
{
    McmContext *c = s->priv_data;
    int ret = 0;
    if (c->pending_len > 0) {
        /* The last audio buffer: what is left, shorter, never padded. */
        int64_t duration = av_rescale_q(c->pending_len / c->frame_bytes,
                                        (AVRational){ 1, s->streams[0]->codecpar->sample_rate },
                                        s->streams[0]->time_base);
        ret = send_buffer(s, c, c->pending, c->pending_len, c->pending_pts, c->pending_pts, duration);
        c->pending_len = 0;
    }
    if (c->conn) {
        int rc = mesh_shutdown_connection(c->conn);
        if (rc)
            av_log(s, AV_LOG_WARNING, "mcm: ending the stream: %s (%d)\n", mesh_err2str(rc), rc);
    }
    return ret;
}

static void mcm_deinit(AVFormatContext *s)
{
    close_connection(s->priv_data);
}

static int mcm_video_read_header(AVFormatContext *s)
{
    McmContext *c = s->priv_data;
    AVStream *st;
    char payload[256];
    int ret;
    if ((ret = video_payload(s, c->width, c->height, c->pix_fmt, c->frame_rate, payload, sizeof(payload))) < 0)
        return ret;
    if ((ret = open_connection(s, c, payload, 0)) < 0)
        return ret;
    if ((ret = check_payload_size(s, c, av_image_get_buffer_size(c->pix_fmt, c->width, c->height, 1))) < 0) {
        close_connection(c);
        return ret;
    }
    if (!(st = avformat_new_stream(s, NULL))) {
        close_connection(c);
        return AVERROR(ENOMEM);
    }
    st->codecpar->codec_type = AVMEDIA_TYPE_VIDEO;
    st->codecpar->codec_id = AV_CODEC_ID_RAWVIDEO;
    st->codecpar->format = c->pix_fmt;
    st->codecpar->width = c->width;
    st->codecpar->height = c->height;
    st->codecpar->bit_rate = av_rescale(c->conn->payload_size * 8, c->frame_rate.num, c->frame_rate.den);
    st->avg_frame_rate = st->r_frame_rate = c->frame_rate;
    avpriv_set_pts_info(st, 64, c->frame_rate.den, c->frame_rate.num);
    return 0;
}

static int mcm_video_read_packet(AVFormatContext *s, AVPacket *pkt)
{
    McmContext *c = s->priv_data;
    MeshBuffer *buf = NULL;
    int ret = receive_buffer(s, c, &buf);
    if (ret < 0)
        return ret;
    return buffer_to_packet(s, c, buf, pkt, 1, 1);
}

static int mcm_read_close(AVFormatContext *s)
{
    close_connection(s->priv_data);
    return 0;
}

/* ---- audio ---- */

static int audio_payload(AVFormatContext *s, McmContext *c, int channels, int rate, char *out, size_t n)
{
    if (channels < 1 || channels > 64) {
        av_log(s, AV_LOG_ERROR, "mcm: %d audio channels, 1 to 64 are carried\n", channels);
        return AVERROR(EINVAL);
    }
    if (check_string(s, "ptime", c->ptime) < 0)
        return AVERROR(EINVAL);
    snprintf(out, n, "\"audio\":{\"channels\":%d,\"sampleRate\":%d,\"format\":\"pcm_s%dbe\",\"packetTime\":\"%s\"}",
             channels, rate, c->audio_bits, c->ptime);
    c->frame_bytes = (size_t)channels * (c->audio_bits / 8);
    return 0;
}

static enum AVCodecID audio_codec(const McmContext *c)
{
    return c->audio_bits == 16 ? AV_CODEC_ID_PCM_S16BE : AV_CODEC_ID_PCM_S24BE;
}

static int mcm_audio_write_header(AVFormatContext *s, int bits)
{
    McmContext *c = s->priv_data;
    AVCodecParameters *par;
    char payload[256];
    int ret;
    c->audio_bits = bits;
    if (s->nb_streams != 1 || s->streams[0]->codecpar->codec_id != audio_codec(c)) {
        av_log(s, AV_LOG_ERROR, "mcm: one %s stream expected (-c:a pcm_s%dbe)\n",
               bits == 16 ? "pcm_s16be" : "pcm_s24be", bits);
        return AVERROR(EINVAL);
    }
    par = s->streams[0]->codecpar;
    if ((ret = audio_payload(s, c, par->ch_layout.nb_channels, par->sample_rate, payload, sizeof(payload))) < 0)
        return ret;
    if ((ret = open_connection(s, c, payload, 1)) < 0)
        return ret;
    if (!(c->pending = av_malloc(c->conn->payload_size)))
        return AVERROR(ENOMEM);
    c->pending_len = 0;
    return 0;
}

static int mcm_audio_pcm16_write_header(AVFormatContext *s) { return mcm_audio_write_header(s, 16); }
static int mcm_audio_pcm24_write_header(AVFormatContext *s) { return mcm_audio_write_header(s, 24); }

/* Cuts the stream into buffers of one packet time. */
static int mcm_audio_write_packet(AVFormatContext *s, AVPacket *pkt)
{
    McmContext *c = s->priv_data;
    const AVStream *st = s->streams[0];
    const AVRational per_sample = { 1, st->codecpar->sample_rate };
    size_t cap = c->conn->payload_size, off = 0;
    while (off < (size_t)pkt->size) {
        size_t n = FFMIN(cap - c->pending_len, (size_t)pkt->size - off);
        if (c->pending_len == 0)
            c->pending_pts = pkt->pts == AV_NOPTS_VALUE
                                 ? AV_NOPTS_VALUE
                                 : pkt->pts + av_rescale_q(off / c->frame_bytes, per_sample, st->time_base);
        memcpy(c->pending + c->pending_len, pkt->data + off, n);
        c->pending_len += n;
        off += n;
        if (c->pending_len == cap) {
            int64_t duration = av_rescale_q(cap / c->frame_bytes, per_sample, st->time_base);
            int ret = send_buffer(s, c, c->pending, cap, c->pending_pts, c->pending_pts, duration);
            c->pending_len = 0;
            if (ret < 0)
                return ret;
        }
    }
    return 0;
}

static int mcm_audio_read_header(AVFormatContext *s, int bits)
{
    McmContext *c = s->priv_data;
    AVStream *st;
    char payload[256];
    int ret;
    c->audio_bits = bits;
    if ((ret = audio_payload(s, c, c->channels, c->sample_rate, payload, sizeof(payload))) < 0)
        return ret;
    if ((ret = open_connection(s, c, payload, 0)) < 0)
        return ret;
    if (!(st = avformat_new_stream(s, NULL))) {
        close_connection(c);
        return AVERROR(ENOMEM);
    }
    st->codecpar->codec_type = AVMEDIA_TYPE_AUDIO;
    st->codecpar->codec_id = audio_codec(c);
    st->codecpar->sample_rate = c->sample_rate;
    av_channel_layout_default(&st->codecpar->ch_layout, c->channels);
    st->codecpar->bits_per_coded_sample = bits;
    st->codecpar->block_align = (int)c->frame_bytes;
    st->codecpar->bit_rate = (int64_t)c->sample_rate * c->frame_bytes * 8;
    avpriv_set_pts_info(st, 64, 1, c->sample_rate);
    return 0;
}

static int mcm_audio_pcm16_read_header(AVFormatContext *s) { return mcm_audio_read_header(s, 16); }
static int mcm_audio_pcm24_read_header(AVFormatContext *s) { return mcm_audio_read_header(s, 24); }

static int mcm_audio_read_packet(AVFormatContext *s, AVPacket *pkt)
{
    McmContext *c = s->priv_data;
    MeshBuffer *buf = NULL;
    int64_t per_index = c->conn->payload_size / c->frame_bytes;
    int ret = receive_buffer(s, c, &buf);
    if (ret < 0)
        return ret;
    return buffer_to_packet(s, c, buf, pkt, per_index, buf->payload_len / c->frame_bytes);
}

/* ---- options ---- */

#define OFF(x) offsetof(McmContext, x)
#define ENC AV_OPT_FLAG_ENCODING_PARAM
#define DEC AV_OPT_FLAG_DECODING_PARAM

#define CONNECTION_OPTIONS(F, IP, QUEUE, PT)                                                        \
    { "buf_queue_cap", "buffers in the connection's queue", OFF(buf_queue_cap), AV_OPT_TYPE_INT,     \
      { .i64 = QUEUE }, 1, 255, F },                                                                \
    { "conn_delay", "ms to wait after creating the connection (sender)", OFF(conn_delay),            \
      AV_OPT_TYPE_INT, { .i64 = 0 }, 0, 10000, F },                                                 \
    { "conn_type", "connection type: multipoint-group, st2110 or rdma", OFF(conn_type),              \
      AV_OPT_TYPE_STRING, { .str = "multipoint-group" }, .flags = F },                              \
    { "urn", "multipoint group URN", OFF(urn), AV_OPT_TYPE_STRING, { .str = "192.168.97.1" },        \
      .flags = F },                                                                                 \
    { "ip_addr", "ST 2110 / RDMA IP address", OFF(ip_addr), AV_OPT_TYPE_STRING, { .str = IP },      \
      .flags = F },                                                                                 \
    { "port", "ST 2110 / RDMA port", OFF(port), AV_OPT_TYPE_INT, { .i64 = 9001 }, 0, 65535, F },    \
    { "mcast_sip_addr", "multicast source IP address (ST 2110 receiver)", OFF(mcast_sip_addr),       \
      AV_OPT_TYPE_STRING, { .str = "" }, .flags = F },                                              \
    { "payload_type", "RTP payload type (ST 2110)", OFF(payload_type), AV_OPT_TYPE_INT,             \
      { .i64 = PT }, 0, 127, F },                                                                   \
    { "rdma_provider", "RDMA provider: tcp or verbs", OFF(rdma_provider), AV_OPT_TYPE_STRING,        \
      { .str = "tcp" }, .flags = F },                                                               \
    { "rdma_num_endpoints", "RDMA endpoints", OFF(rdma_num_endpoints), AV_OPT_TYPE_INT,             \
      { .i64 = 1 }, 1, 8, F },                                                                      \
    { "reliable", "mcm extension: the sender waits for slow receivers, nothing is dropped (file work)", \
      OFF(reliable), AV_OPT_TYPE_BOOL, { .i64 = 0 }, 0, 1, F }

#define VIDEO_OPTIONS(F)                                                                            \
    { "transport", "ST 2110 transport: st2110-20, st2110-22", OFF(transport), AV_OPT_TYPE_STRING,    \
      { .str = "st2110-20" }, .flags = F },                                                         \
    { "transport_pixel_format", "ST 2110-20 pixel format on the wire", OFF(transport_pixel_format),  \
      AV_OPT_TYPE_STRING, { .str = "yuv422p10rfc4175" }, .flags = F },                              \
    { "video_size", "frame size (receiver)", OFF(width), AV_OPT_TYPE_IMAGE_SIZE,                     \
      { .str = "1920x1080" }, 0, 0, F },                                                            \
    { "pixel_format", "pixel format (receiver)", OFF(pix_fmt), AV_OPT_TYPE_PIXEL_FMT,                \
      { .i64 = AV_PIX_FMT_YUV422P10LE }, -1, INT_MAX, F },                                          \
    { "frame_rate", "frame rate (receiver; a sender uses its stream's)", OFF(frame_rate),            \
      AV_OPT_TYPE_VIDEO_RATE, { .str = "25" }, 0, INT_MAX, F }

#define AUDIO_OPTIONS(F)                                                                            \
    { "channels", "audio channels (receiver)", OFF(channels), AV_OPT_TYPE_INT, { .i64 = 2 }, 1, 64, F }, \
    { "sample_rate", "sample rate (receiver)", OFF(sample_rate), AV_OPT_TYPE_INT, { .i64 = 48000 },  \
      1, 384000, F },                                                                               \
    { "ptime", "packet time: 1ms, 125us, 250us, 333us, 4ms, 80us (48/96 kHz); 1.09ms, 0.14ms, 0.09ms (44.1 kHz)", \
      OFF(ptime), AV_OPT_TYPE_STRING, { .str = "1ms" }, .flags = F }

static const AVOption video_tx_options[] = {
    CONNECTION_OPTIONS(ENC, "192.168.96.2", 8, 112), VIDEO_OPTIONS(ENC), { NULL },
};
static const AVOption video_rx_options[] = {
    CONNECTION_OPTIONS(DEC, "239.168.68.190", 8, 112), VIDEO_OPTIONS(DEC), { NULL },
};
static const AVOption audio_tx_options[] = {
    CONNECTION_OPTIONS(ENC, "192.168.96.2", 16, 111), AUDIO_OPTIONS(ENC), { NULL },
};
static const AVOption audio_rx_options[] = {
    CONNECTION_OPTIONS(DEC, "239.168.68.190", 16, 111), AUDIO_OPTIONS(DEC), { NULL },
};

#define MCM_CLASS(var, name, opts, cat)                                                             \
    static const AVClass var = {                                                                    \
        .class_name = name,                                                                         \
        .item_name = av_default_item_name,                                                          \
        .option = opts,                                                                             \
        .version = LIBAVUTIL_VERSION_INT,                                                           \
        .category = cat,                                                                            \
    }

MCM_CLASS(video_tx_class, "mcm video muxer", video_tx_options, AV_CLASS_CATEGORY_DEVICE_VIDEO_OUTPUT);
MCM_CLASS(video_rx_class, "mcm video demuxer", video_rx_options, AV_CLASS_CATEGORY_DEVICE_VIDEO_INPUT);
MCM_CLASS(pcm16_tx_class, "mcm pcm16 muxer", audio_tx_options, AV_CLASS_CATEGORY_DEVICE_AUDIO_OUTPUT);
MCM_CLASS(pcm16_rx_class, "mcm pcm16 demuxer", audio_rx_options, AV_CLASS_CATEGORY_DEVICE_AUDIO_INPUT);
MCM_CLASS(pcm24_tx_class, "mcm pcm24 muxer", audio_tx_options, AV_CLASS_CATEGORY_DEVICE_AUDIO_OUTPUT);
MCM_CLASS(pcm24_rx_class, "mcm pcm24 demuxer", audio_rx_options, AV_CLASS_CATEGORY_DEVICE_AUDIO_INPUT);

/* ---- format tables (FFInputFormat/FFOutputFormat since lavf 61 and 60; plain before) ---- */

#if LIBAVFORMAT_VERSION_MAJOR >= 61
#define DEMUXER(sym, nm, desc, cls, header, packet)                                                 \
    const FFInputFormat sym = {                                                                     \
        .p.name = nm, .p.long_name = desc, .p.flags = AVFMT_NOFILE, .p.priv_class = &cls,           \
        .priv_data_size = sizeof(McmContext), .read_header = header, .read_packet = packet,         \
        .read_close = mcm_read_close,                                                               \
    }
#define MUXER(sym, nm, desc, cls, acodec, vcodec, header, packet)                                   \
    const FFOutputFormat sym = {                                                                    \
        .p.name = nm, .p.long_name = desc, .p.flags = AVFMT_NOFILE, .p.priv_class = &cls,           \
        .p.audio_codec = acodec, .p.video_codec = vcodec, .priv_data_size = sizeof(McmContext),     \
        .write_header = header, .write_packet = packet, .write_trailer = mcm_write_trailer,         \
        .deinit = mcm_deinit,                                                                       \
    }
#else
#define DEMUXER(sym, nm, desc, cls, header, packet)                                                 \
    const AVInputFormat sym = {                                                                     \
        .name = nm, .long_name = desc, .flags = AVFMT_NOFILE, .priv_class = &cls,                   \
        .priv_data_size = sizeof(McmContext), .read_header = header, .read_packet = packet,         \
        .read_close = mcm_read_close,                                                               \
    }
#define MUXER(sym, nm, desc, cls, acodec, vcodec, header, packet)                                   \
    const AVOutputFormat sym = {                                                                    \
        .name = nm, .long_name = desc, .flags = AVFMT_NOFILE, .priv_class = &cls,                   \
        .audio_codec = acodec, .video_codec = vcodec, .priv_data_size = sizeof(McmContext),         \
        .write_header = header, .write_packet = packet, .write_trailer = mcm_write_trailer,         \
        .deinit = mcm_deinit,                                                                       \
    }
#endif

DEMUXER(ff_mcm_demuxer, "mcm", "mcm media mesh video input", video_rx_class,
        mcm_video_read_header, mcm_video_read_packet);
MUXER(ff_mcm_muxer, "mcm", "mcm media mesh video output", video_tx_class,
      AV_CODEC_ID_NONE, AV_CODEC_ID_RAWVIDEO, mcm_video_write_header, mcm_video_write_packet);
DEMUXER(ff_mcm_audio_pcm16_demuxer, "mcm_audio_pcm16", "mcm media mesh PCM 16-bit input",
        pcm16_rx_class, mcm_audio_pcm16_read_header, mcm_audio_read_packet);
MUXER(ff_mcm_audio_pcm16_muxer, "mcm_audio_pcm16", "mcm media mesh PCM 16-bit output",
      pcm16_tx_class, AV_CODEC_ID_PCM_S16BE, AV_CODEC_ID_NONE, mcm_audio_pcm16_write_header,
      mcm_audio_write_packet);
DEMUXER(ff_mcm_audio_pcm24_demuxer, "mcm_audio_pcm24", "mcm media mesh PCM 24-bit input",
        pcm24_rx_class, mcm_audio_pcm24_read_header, mcm_audio_read_packet);
MUXER(ff_mcm_audio_pcm24_muxer, "mcm_audio_pcm24", "mcm media mesh PCM 24-bit output",
      pcm24_tx_class, AV_CODEC_ID_PCM_S24BE, AV_CODEC_ID_NONE, mcm_audio_pcm24_write_header,
      mcm_audio_write_packet);
