"""How a MySQL URL is shown in messages: its password masked, no password made up."""

from rowcast.sources.mysql.server import parse_url


def test_a_password_is_masked() -> None:
    url = parse_url("mysql://root:s3cret@127.0.0.1:3306/shop")
    assert url.masked == "mysql://root:***@127.0.0.1:3306/shop"


def test_a_url_without_a_password_is_shown_without_one() -> None:
    # `rowcast doctor mysql://root@host/db` printed `mysql://root:***@...`: a reader
    # would look for a password that was never given
    assert (
        parse_url("mysql://root@127.0.0.1:3306/shop").masked == "mysql://root@127.0.0.1:3306/shop"
    )
    # without a user in the URL, rowcast connects as root, and says so
    assert parse_url("mysql://127.0.0.1:3306").masked == "mysql://root@127.0.0.1:3306"
