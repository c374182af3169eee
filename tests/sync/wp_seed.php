<?php
/**
 * Give a lab WordPress the data a sync has to get right, through WordPress's own
 * API: serialized options, post meta and widgets holding the site URL (nested,
 * multibyte, JSON inside serialized, serialized inside serialized), a page that
 * links to it, and personal data (a customer, an order e-mail, a commenter).
 * Read from stdin; FORGE_ROOT is the release to load WordPress from.
 */
$root = getenv('FORGE_ROOT');
define('WP_USE_THEMES', false);
require $root . '/web/wp/wp-load.php';

$u = home_url();
update_option('forge_nested', [
    'level1' => ['level2' => ['level3' => ['url' => "$u/deep/page", 'label' => "Zürich ☃ 日本語 — $u"]]],
    'count' => 3,
    'json' => json_encode(['link' => "$u/api", 'name' => 'Grüße']),
    'inner' => serialize(['img' => "$u/app/uploads/a.jpg", 'ß' => 'ünïcödé', 'deeper' => serialize([$u])]),
    'float' => 1.5,
    'flag' => true,
]);
update_option('forge_json', wp_json_encode(['home' => "$u/x", 'list' => ["$u/1", "$u/2"]]));
update_option('widget_text', [
    2 => ['title' => 'Links ✓', 'text' => "<a href=\"$u/contact\">Kontakt – ☎</a>", 'filter' => false],
    '_multiwidget' => 1,
]);
update_option('sidebars_widgets', ['wp_inactive_widgets' => [], 'sidebar-1' => ['text-2'], 'array_version' => 3]);
update_option('theme_mods_forge-example', ['header_image' => "$u/app/uploads/header.jpg", 'nav_menu_locations' => ['primary' => 3]]);

$post = wp_insert_post([
    'post_title' => 'Synced post',
    'post_content' => "<p><a href=\"$u/about\">Über uns</a> <img src=\"$u/app/uploads/a.jpg\"></p>",
    'post_status' => 'publish',
]);
update_post_meta($post, '_forge_builder', ['rows' => [['cols' => [[
    'html' => "<a href='$u/x'>x</a>",
    'json' => wp_json_encode(['u' => "$u/j", 'ä' => 'ö']),
]]]]]);
update_post_meta($post, '_billing_email', 'jane.buyer@customer-mail.test');
update_post_meta($post, '_billing_phone', '+49 30 1234567');
$user = wp_insert_user(['user_login' => 'jane', 'user_email' => 'jane@customer-mail.test',
                        'user_pass' => 'secret-pass-1', 'user_url' => $u]);
update_user_meta($user, 'forge_profile', ['site' => $u, 'nick' => 'Jäne']);
wp_insert_comment(['comment_post_ID' => $post, 'comment_author' => 'Bob',
                   'comment_author_email' => 'bob@customer-mail.test',
                   'comment_content' => "see $u/about", 'comment_approved' => 1]);
set_transient('forge_cached', ['url' => $u], 3600);
echo "seeded $u\n";
