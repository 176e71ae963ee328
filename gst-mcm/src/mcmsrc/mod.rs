// SPDX-License-Identifier: Apache-2.0

/**
 * element-mcmsrc:
 * @short-description: Subscribes to raw video in the mcm mesh
 *
 * `mcmsrc` reads the grains of a shared-memory flow (MXL v1 layout) and pushes them as
 * buffers, with the caps the sender's flow describes: nothing to configure on the receiving
 * side but where to find the stream. With `urn` it joins a multipoint group through the
 * host's media proxy; with `domain` and `flow-id` it reads the flow directly (e.g. one written
 * by MXL tools). End of stream travels from `mcmsink` to `mcmsrc`. An ST 2110 stream is
 * received through the proxy's receive bridge, described by properties (`conn-type=st2110`,
 * `ip-addr`, `port`, `transport`, `caps`) or by its SDP file (`sdp-file`).
 *
 * ## Example pipelines
 * |[
 * gst-launch-1.0 mcmsrc urn=studio/cam1 ! videoconvert ! autovideosink
 * gst-launch-1.0 mcmsrc urn=clip reliable=true ! filesink location=copy.yuv
 * gst-launch-1.0 mcmsrc domain=/dev/shm/mxl flow-id=5fbec3b1-2d3e-4f00-9a6a-3c1b2a7d9e01 ! fakesink
 * gst-launch-1.0 mcmsrc sdp-file=camera1.sdp ! videoconvert ! autovideosink
 * ]|
 */
use gst::glib;
use gst::prelude::*;

mod imp;
pub(crate) mod lease;
mod samples;

glib::wrapper! {
    pub struct McmSrc(ObjectSubclass<imp::McmSrc>) @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "mcmsrc",
        gst::Rank::NONE,
        McmSrc::static_type(),
    )
}
