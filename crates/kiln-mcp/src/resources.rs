//! Resources: each sample's problem statement at `kiln://samples/{dataset}/{sample_id}`
//! (Markdown), so a client can attach a task to a conversation without a tool call.
use kiln_domain::SampleQuery;
use kiln_services::{Kiln, ServiceError};
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use rmcp::ErrorData;

const PREFIX: &str = "kiln://samples/";
/// Samples per page of `resources/list`.
const PAGE: u64 = 100;

fn uri(dataset: &str, sample_id: &str) -> String {
    format!("{PREFIX}{dataset}/{sample_id}")
}

fn failed(error: &ServiceError) -> ErrorData {
    match error {
        ServiceError::NotFound { .. } => ErrorData::resource_not_found(error.to_string(), None),
        _ => {
            tracing::error!(error = %error, "MCP resource failed");
            ErrorData::internal_error("the server failed; try again later", None)
        }
    }
}

/// A page of the samples (the cursor is an offset).
pub(crate) async fn list(
    kiln: &Kiln,
    viewer: &str,
    cursor: Option<&str>,
) -> Result<ListResourcesResult, ErrorData> {
    let offset = match cursor {
        None => 0,
        Some(c) => c
            .parse()
            .map_err(|_| ErrorData::invalid_params("not a cursor of this server", None))?,
    };
    let query = SampleQuery {
        visible_to: Some(viewer.to_string()),
        dataset: None,
        search: None,
        limit: Some(PAGE),
        offset,
    };
    let page = kiln
        .datasets
        .list_samples(&query)
        .await
        .map_err(|e| failed(&e))?;
    let next = offset + page.samples.len() as u64;
    let resources = page
        .samples
        .iter()
        .map(|s| {
            Resource::new(uri(&s.dataset, &s.sample_id), s.sample_id.clone())
                .with_description(format!(
                    "The problem statement of {} ({})",
                    s.sample_id, s.repo
                ))
                .with_mime_type("text/markdown")
        })
        .collect();
    let mut result = ListResourcesResult::with_all_items(resources);
    if next < page.total && !page.samples.is_empty() {
        result.next_cursor = Some(next.to_string());
    }
    Ok(result)
}

pub(crate) fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![ResourceTemplate::new(
        format!("{PREFIX}{{dataset}}/{{sample_id}}"),
        "sample problem statement",
    )
    .with_description("The problem statement of a dataset's sample (its latest version)")
    .with_mime_type("text/markdown")])
}

pub(crate) async fn read(
    kiln: &Kiln,
    viewer: &str,
    uri: &str,
) -> Result<ReadResourceResult, ErrorData> {
    let Some((dataset, sample_id)) = uri.strip_prefix(PREFIX).and_then(|r| r.split_once('/'))
    else {
        return Err(ErrorData::resource_not_found(
            format!("no resource {uri}: this server has {PREFIX}{{dataset}}/{{sample_id}}"),
            None,
        ));
    };
    let sample = kiln
        .datasets
        .get_visible_sample(viewer, dataset, sample_id, None)
        .await
        .map_err(|e| failed(&e))?;
    let text = ResourceContents::text(sample.record.problem_statement, uri)
        .with_mime_type("text/markdown");
    Ok(ReadResourceResult::new(vec![text]))
}
