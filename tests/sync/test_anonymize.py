"""Row hooks on the dump stream: the default anonymizer, and INSERTs without column
lists (a backup snapshot's dump: ``VALUES`` then one row a line) read through the
CREATE TABLE before them."""

from __future__ import annotations

from forge_ci.sync.anonymize import Anonymizer
from forge_ci.sync.command import url_pairs
from forge_ci.sync.replace import Rules
from forge_ci.sync.sqldump import Options, Report, rewrite_dump

RULES = Rules.from_pairs([("https://example.com", "https://staging.example.com")])
SCRUB = Options(scrub=Anonymizer.default("wp_"))


def run(dump: bytes, options: Options = SCRUB) -> tuple[bytes, Report]:
    report = Report()
    return b"".join(rewrite_dump([dump], RULES, options, report)), report


USERS = b"""CREATE TABLE `wp_users` (
  `ID` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `user_login` varchar(60) NOT NULL DEFAULT '',
  `user_pass` varchar(255) NOT NULL DEFAULT '',
  `user_email` varchar(100) NOT NULL DEFAULT '',
  `user_url` varchar(100) NOT NULL DEFAULT '',
  `user_activation_key` varchar(255) NOT NULL DEFAULT '',
  PRIMARY KEY (`ID`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO `wp_users` VALUES
(1,'admin','$P$Bhash','ceo@real-company.test','https://example.com','key'),
(2,'o\\'brien','$P$B2','o.brien@mail.test','','');
"""


def test_users_lose_emails_passwords_and_keys_without_a_column_list() -> None:
    out, report = run(USERS)
    assert b"real-company.test" not in out and b"mail.test" not in out
    assert b"$P$B" not in out
    assert b"(1,'admin','','user-1@example.invalid','https://staging.example.com','')" in out
    assert b"(2,'o\\'brien','','user-2@example.invalid','','')" in out
    assert report.scrubbed == {"wp_users": 2}
    assert report.changed == {("wp_users", "user_url"): 1}


def test_order_meta_and_comment_emails_are_scrubbed_other_rows_kept() -> None:
    dump = (b"INSERT INTO `wp_postmeta` (`meta_id`, `post_id`, `meta_key`, `meta_value`) VALUES "
            b"(1,10,'_billing_email','buyer@mail.test'),(2,10,'_billing_phone','+1 555'),"
            b"(3,10,'_price','9.99'),(4,11,'_billing_email',NULL);\n"
            b"INSERT INTO `wp_comments` (`comment_ID`, `comment_author_email`, `comment_content`)"
            b" VALUES (7,'fan@mail.test','hi'),(8,'','anonymous');\n"
            b"INSERT INTO `wp_wc_orders` (`id`, `billing_email`) VALUES (42,'shop@mail.test');\n")
    out, report = run(dump)
    assert b"mail.test" not in out and b"+1 555" not in out
    assert b"(1,10,'_billing_email','order-10@example.invalid')" in out
    assert b"(2,10,'_billing_phone','')" in out
    assert b"(3,10,'_price','9.99')" in out and b"(4,11,'_billing_email',NULL)" in out
    assert b"(7,'comment-7@example.invalid','hi'),(8,'','anonymous')" in out
    assert b"(42,'order-42@example.invalid')" in out
    assert report.scrubbed == {"wp_postmeta": 2, "wp_comments": 1, "wp_wc_orders": 1}


def test_without_anonymize_and_in_a_dry_run_the_data_stays() -> None:
    out, report = run(USERS, Options())
    assert b"ceo@real-company.test" in out and not report.scrubbed
    dry, report = run(USERS, Options(scrub=Anonymizer.default("wp_"), dry_run=True))
    assert dry == USERS and report.scrubbed == {"wp_users": 2}


def test_url_pairs_extra_first_siteurl_under_home_needs_no_pair() -> None:
    pairs = url_pairs(["https://example.com/", "https://example.com", None],
                      "https://example.com/wp", "https://staging.example.com", None,
                      [("cdn.example.com", "cdn.staging.example.com")])
    assert pairs == [("cdn.example.com", "cdn.staging.example.com"),
                     ("https://example.com", "https://staging.example.com")]
    other = url_pairs(["https://example.com"], "https://admin.example.com",
                      "https://staging.example.com", "https://admin.staging.example.com", [])
    assert other[-1] == ("https://admin.example.com", "https://admin.staging.example.com")
