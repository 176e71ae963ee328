// SPDX-License-Identifier: Apache-2.0

/**
 * element-mcmsink:
 * @short-description: Publishes raw video into the mcm mesh
 *
 * `mcmsink` writes every buffer as a grain of a shared-memory flow (MXL v1 layout). With
 * `urn` it joins a multipoint group through the host's media proxy; with `domain` and
 * `flow-id` it writes the flow directly, readable by `mcmsrc` and MXL tools.
 *
 * ## Example pipelines
 * |[
 * gst-launch-1.0 videotestsrc is-live=true ! video/x-raw,format=v210,width=1920,height=1080 ! mcmsink urn=studio/cam1
 * gst-launch-1.0 filesrc location=clip.mp4 ! decodebin ! videoconvert ! video/x-raw,format=I420 ! mcmsink urn=clip reliable=true
 * gst-launch-1.0 videotestsrc ! video/x-raw,format=v210 ! mcmsink domain=/dev/shm/mxl flow-id=5fbec3b1-2d3e-4f00-9a6a-3c1b2a7d9e01
 * ]|
 */
use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct McmSink(ObjectSubclass<imp::McmSink>) @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "mcmsink",
        gst::Rank::NONE,
        McmSink::static_type(),
    )
}
