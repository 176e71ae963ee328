/* Exercises libmcm_dp through MCM's C API only (mesh_dp.h), as an MCM application would:
 * argument checks and error codes, then a transmitter and a receiver (in a second thread)
 * of one multipoint group through the media proxy named by MCM_PROXY_SOCKET, every frame
 * and its metadata checked, the end of stream, and the clean-up rules.
 * Usage: mesh_dp_test URN FRAMES */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mesh_dp.h>

#define W 64
#define H 32
#define FRAME_BYTES (W * H * 2) /* uyvy422 */

static int failures;
#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "mesh_dp_test: FAILED at line %d: %s: ", __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, "\n");                                                         \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static uint8_t pattern(int frame, size_t i) { return (uint8_t)(frame * 31 + i * 7 + (i >> 8)); }

static char conn_json[512];
static int frames;

struct rx_result {
    int received;
    int bad;
    int closed_rc;
};

static void *receive(void *arg) {
    MeshConnection *rx = arg;
    struct rx_result *res = calloc(1, sizeof *res);
    for (;;) {
        MeshBuffer *buf = NULL;
        int rc = mesh_get_buffer_timeout(rx, &buf, 5000);
        if (rc != 0) {
            res->closed_rc = rc;
            break;
        }
        const uint8_t *p = buf->payload_ptr;
        int ok = buf->payload_len == FRAME_BYTES;
        for (size_t i = 0; ok && i < buf->payload_len; i++)
            ok = p[i] == pattern(res->received, i);
        char want[32];
        snprintf(want, sizeof want, "frame %d", res->received);
        ok = ok && buf->metadata_len == strlen(want) &&
             memcmp(buf->metadata_ptr, want, buf->metadata_len) == 0;
        res->bad += !ok;
        res->received++;
        rc = mesh_put_buffer(&buf);
        CHECK(rc == 0 && buf == NULL, "put on receiver: %s", mesh_err2str(rc));
    }
    return res;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s URN FRAMES\n", argv[0]);
        return 2;
    }
    frames = atoi(argv[2]);
    snprintf(conn_json, sizeof conn_json,
             "{\"connection\":{\"multipointGroup\":{\"urn\":\"%s\"}},"
             "\"payload\":{\"video\":{\"width\":%d,\"height\":%d,\"fps\":25,"
             "\"pixelFormat\":\"uyvy422\"}},\"maxMetadataSize\":64,"
             "\"bufferQueueCapacity\":16,\"reliable\":true}",
             argv[1], W, H);

    /* Arguments and error codes, no proxy needed. */
    MeshClient *client = NULL;
    MeshConnection *tx = NULL, *rx = NULL;
    MeshBuffer *buf = NULL;
    CHECK(mesh_create_client(NULL, NULL) == -MESH_ERR_BAD_CLIENT_PTR, "null client slot");
    CHECK(mesh_delete_client(NULL) == -MESH_ERR_BAD_CLIENT_PTR, "null delete");
    CHECK(mesh_delete_client(&client) == -MESH_ERR_BAD_CLIENT_PTR, "delete of a null client");
    CHECK(mesh_create_client(&client, "{not json") == -MESH_ERR_CLIENT_CONFIG_INVAL, "bad json");
    CHECK(mesh_get_buffer(NULL, &buf) == -MESH_ERR_BAD_CONN_PTR, "null connection");
    CHECK(mesh_put_buffer(NULL) == -MESH_ERR_BAD_BUF_PTR, "null buffer slot");
    CHECK(mesh_put_buffer(&buf) == -MESH_ERR_BAD_BUF_PTR, "null buffer");
    CHECK(mesh_buffer_set_payload_len(NULL, 1) == -MESH_ERR_BAD_BUF_PTR, "null buffer len");
    CHECK(strcmp(mesh_err2str(-MESH_ERR_TIMEOUT), "Timeout occurred") == 0, "err2str");
    CHECK(strcmp(mesh_err2str(-4242), "Unknown error code") == 0, "err2str unknown");

    int rc = mesh_create_client(&client, NULL);
    CHECK(rc == 0 && client != NULL, "client: %s", mesh_err2str(rc));
    if (rc != 0)
        return 1;
    CHECK(mesh_create_tx_connection(client, &tx, NULL) == -MESH_ERR_BAD_CONFIG_PTR, "null cfg");
    rc = mesh_create_tx_connection(
        client, &tx,
        "{\"connection\":{\"multipointGroup\":{\"urn\":\"x\"}},\"payload\":{\"video\":{\"pixelFormat\":\"rgb48\"}}}");
    CHECK(rc == -MESH_ERR_CONN_CONFIG_INVAL, "unsupported pixel format: %s", mesh_err2str(rc));

    rc = mesh_create_rx_connection(client, &rx, conn_json);
    CHECK(rc == 0, "rx: %s", mesh_err2str(rc));
    rc = mesh_create_tx_connection(client, &tx, conn_json);
    CHECK(rc == 0, "tx: %s", mesh_err2str(rc));
    if (failures)
        return 1;
    CHECK(tx->payload_size == FRAME_BYTES, "payload_size %zu", tx->payload_size);
    CHECK(tx->metadata_size == 64, "metadata_size %zu", tx->metadata_size);
    CHECK(tx->client == client, "connection's client");
    CHECK(mesh_delete_client(&client) == -MESH_ERR_FOUND_ALLOCATED, "client still has connections");

    pthread_t thread;
    pthread_create(&thread, NULL, receive, rx);
    for (int f = 0; f < frames; f++) {
        rc = mesh_get_buffer(tx, &buf);
        CHECK(rc == 0, "tx get_buffer %d: %s", f, mesh_err2str(rc));
        if (rc != 0)
            break;
        MeshBuffer *again = NULL;
        if (f == 0)
            CHECK(mesh_get_buffer(tx, &again) == -MESH_ERR_FOUND_ALLOCATED, "one buffer at a time");
        CHECK(buf->conn == tx && buf->payload_len == FRAME_BYTES && buf->metadata_len == 0,
              "fresh buffer %zu %zu", buf->payload_len, buf->metadata_len);
        CHECK(mesh_buffer_set_payload_len(buf, FRAME_BYTES + 1) == -MESH_ERR_BAD_BUF_LEN,
              "payload beyond capacity");
        uint8_t *p = buf->payload_ptr;
        for (size_t i = 0; i < FRAME_BYTES; i++)
            p[i] = pattern(f, i);
        int n = snprintf(buf->metadata_ptr, tx->metadata_size, "frame %d", f);
        CHECK(mesh_buffer_set_metadata_len(buf, (size_t)n) == 0 && buf->metadata_len == (size_t)n,
              "metadata len");
        rc = mesh_put_buffer(&buf);
        CHECK(rc == 0 && buf == NULL, "tx put %d: %s", f, mesh_err2str(rc));
    }
    rc = mesh_shutdown_connection(tx);
    CHECK(rc == 0, "shutdown: %s", mesh_err2str(rc));
    struct rx_result *res;
    pthread_join(thread, (void **)&res);
    CHECK(res->received == frames, "received %d of %d", res->received, frames);
    CHECK(res->bad == 0, "%d frames differ", res->bad);
    CHECK(res->closed_rc == -MESH_ERR_CONN_CLOSED, "end of stream: %s", mesh_err2str(res->closed_rc));

    CHECK(mesh_delete_connection(&tx) == 0 && tx == NULL, "delete tx");
    CHECK(mesh_delete_connection(&rx) == 0 && rx == NULL, "delete rx");
    CHECK(mesh_delete_connection(&rx) == -MESH_ERR_BAD_CONN_PTR, "delete twice");
    CHECK(mesh_delete_client(&client) == 0 && client == NULL, "delete client");
    if (failures)
        return 1;
    printf("mesh_dp_test: OK, %d of %d frames and their metadata exact, end of stream seen\n",
           res->received, frames);
    free(res);
    return 0;
}
