<?php
/**
 * Install WordPress from the CLI for the lab (no web installer, no e-mail,
 * no HTTP). Settings arrive in FORGE_INSTALL_* environment variables so no
 * password shows on a command line.
 */

$root = getenv('FORGE_INSTALL_ROOT');
$url = rtrim((string) getenv('FORGE_INSTALL_URL'), '/');
$parts = parse_url($url);

// WordPress reads the request to guess URLs; pretend to be a request to $url.
$_SERVER['HTTP_HOST'] = $parts['host'] . (isset($parts['port']) ? ':' . $parts['port'] : '');
$_SERVER['SERVER_NAME'] = $parts['host'];
$_SERVER['SERVER_PORT'] = (string) ($parts['port'] ?? 80);
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';
if (($parts['scheme'] ?? 'http') === 'https') {
    $_SERVER['HTTPS'] = 'on';
}

define('WP_INSTALLING', true);

// Pluggable in wp-admin/includes/upgrade.php: the lab has no mail server.
function wp_new_blog_notification($blog_title, $blog_url, $user_id, $password)
{
}

require $root . '/web/wp/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';

// The installer probes pretty permalinks over HTTP; answer it locally instead.
add_filter('pre_http_request', function () {
    return new WP_Error('forge_lab', 'no HTTP during a lab install');
});

if (!is_blog_installed()) {
    wp_install(
        getenv('FORGE_INSTALL_TITLE'),
        getenv('FORGE_INSTALL_ADMIN'),
        getenv('FORGE_INSTALL_EMAIL'),
        true,
        '',
        getenv('FORGE_INSTALL_PASSWORD')
    );
}

switch_theme('forge-example');
// wp_install sets home to the guessed site URL (here .../wp): fix both.
update_option('home', $url);
update_option('siteurl', $url . '/wp');

global $wp_rewrite;
$wp_rewrite->set_permalink_structure('/%postname%/');
flush_rewrite_rules(false);

echo "installed ", get_option('home'), "\n";
