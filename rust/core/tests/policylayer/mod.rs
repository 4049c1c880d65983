//! PolicyLayer's example policies, shared by the tests that load and decide them: the policy
//! JSON of each example in PolicyLayer's documentation, copied literally into
//! examples/policylayer/ (the Python tests read the same files), with the tool it names, its
//! counter and its per-minute, per-grant maximum, as the document says them.

macro_rules! example {
    ($tool:literal, $counter:literal, $max:literal) => {
        (
            include_str!(concat!("../../../../examples/policylayer/", $tool, ".json")),
            $tool,
            $counter,
            $max,
        )
    };
}

/// (policy text, tool, counter, max per minute per grant)
pub const EXAMPLES: [(&str, &str, &str, u32); 5] = [
    example!("create-ami", "create-ami_rate", 30),
    example!("create_access_key", "create_access_key_rate", 30),
    example!("vm_create_image", "vm_create_image_rate", 10),
    example!(
        "update_image_set_metadata",
        "update_image_set_metadata_rate",
        30
    ),
    example!("stream_group_create", "stream_group_create_rate", 30),
];
