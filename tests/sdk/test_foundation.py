"""The official `codeset` SDK (0.9.1, unmodified) against Kiln: datasets, samples,
paging, download — sync and async clients."""
import asyncio
import io
import json
import tarfile

import codeset
import pytest

DEMO = "kiln-demo"


@pytest.fixture()
def client(kiln_server):
    return codeset.Codeset(api_key=kiln_server["api_key"], base_url=kiln_server["base_url"], max_retries=0)


def test_health(client):
    health = client.health.check()
    assert health.status == "healthy"
    assert health.service == "kiln"


def test_lists_datasets(client):
    datasets = client.datasets.list()
    demo = [d for d in datasets if d.name == DEMO]
    assert demo, datasets
    assert demo[0].sample_count >= 8
    assert demo[0].created_at is not None


def test_lists_all_samples_without_paging(client):
    listing = client.samples.list(dataset=DEMO)
    assert listing.total_count == len(listing.samples) >= 8
    assert listing.has_more is False
    languages = {s.language for s in listing.samples}
    assert {"python", "rust", "javascript"} <= languages
    for sample in listing.samples:
        assert sample.dataset == DEMO
        assert sample.fail_to_pass, sample.sample_id
        assert sample.pass_to_pass, sample.sample_id
        assert sample.verifier == "test_suite"
        assert len(sample.base_commit) == 40


def test_pages_through_samples(client):
    total = client.samples.list(dataset=DEMO).total_count
    seen, page = [], 1
    while True:
        listing = client.samples.list(dataset=DEMO, page=page, page_size=3)
        assert listing.page == page and listing.page_size == 3
        assert listing.total_count == total
        seen += [s.sample_id for s in listing.samples]
        if not listing.has_more:
            break
        page += 1
    assert len(seen) == len(set(seen)) == total
    assert page == -(-total // 3)


def test_search_and_bad_paging(client):
    listing = client.samples.list(search="JSONPTR")
    assert [s.instance_id for s in listing.samples] == ["kiln-demo__jsonptr-1"]
    with pytest.raises(codeset.UnprocessableEntityError) as err:
        client.samples.list(page_size=101)
    assert err.value.body["detail"][0]["loc"] == ["query", "page_size"]


def test_downloads_a_sample(client):
    sample = client.samples.list(search="inifile").samples[0]
    response = client.samples.with_raw_response.download(sample.sample_id, dataset=DEMO)
    assert response.headers["content-type"] == "application/gzip"
    assert "attachment" in response.headers["content-disposition"]
    archive = tarfile.open(fileobj=io.BytesIO(response.http_response.content), mode="r:gz")
    names = archive.getnames()
    root = f"{sample.sample_id}-v{sample.version}"
    record = json.load(archive.extractfile(f"{root}/sample.json"))
    assert record["base_commit"] == sample.base_commit
    assert any(n.startswith(f"{root}/repo/") and n.endswith(".py") for n in names), names


def test_download_of_unknown_sample_is_404(client):
    with pytest.raises(codeset.NotFoundError):
        client.samples.download("nope", dataset=DEMO)


def test_bad_key_is_401(kiln_server):
    bad = codeset.Codeset(api_key="kiln_wrong", base_url=kiln_server["base_url"], max_retries=0)
    with pytest.raises(codeset.AuthenticationError):
        bad.samples.download("kiln-demo__inifile-1", dataset=DEMO)


def test_async_client(kiln_server):
    async def run():
        async with codeset.AsyncCodeset(api_key=kiln_server["api_key"], base_url=kiln_server["base_url"]) as client:
            datasets, listing = await asyncio.gather(client.datasets.list(), client.samples.list(dataset=DEMO, page=1, page_size=2))
            assert any(d.name == DEMO for d in datasets)
            assert len(listing.samples) == 2 and listing.has_more
            response = await client.samples.with_raw_response.download(listing.samples[0].sample_id, dataset=DEMO)
            assert response.http_response.content[:2] == b"\x1f\x8b"

    asyncio.run(run())
